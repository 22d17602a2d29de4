"""MOAT: blocks and attention against direct references, the frozen deeplab2 (TensorFlow) parity fixture, the TF1
checkpoint converter on the real variable names and shapes, parameter counts and FLOPs, any input size, window
attention for dense prediction, gradient checkpointing and weight loading."""
import json
import math
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from _zoo import assert_grad_checkpointing_matches

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import fit
from backbones.moat import (
    MOAT,
    MBConvBlock,
    MOATAttention,
    MOATBlock,
    from_tf,
    read_tf_checkpoint,
    tf_to_torch_name,
)

DATA = Path(__file__).parent / 'data'
FIXTURE = DATA / 'moat_official.pt'  # tools/moat_tf_parity.py, from deeplab2's TF MOAT
TF_VARIABLES = DATA / 'moat_tf_variables.json'  # names and shapes of deeplab2's tiny_moat0 (same script)
EMA = '/ExponentialMovingAverage'
# the model card's params (M) and FLOPs (G) at each release's resolution (specs/variants.csv, the checkpoints page)
PUBLISHED = dict(moat_0=27.8, moat_1=41.6, moat_2=73.4, moat_3=190.0, moat_4=483.2, tiny_moat_0=3.4, tiny_moat_1=5.1,
                 tiny_moat_2=9.8, tiny_moat_3=19.5, moat_0_no_pe=27.8, moat_1_no_pe=41.5, moat_2_no_pe=73.2,
                 moat_3_no_pe=189.5, moat_4_no_pe=482.5, tiny_moat_0_no_pe=3.3, tiny_moat_1_no_pe=5.1,
                 tiny_moat_2_no_pe=9.7, tiny_moat_3_no_pe=19.5)
SMALL = dict(stem_size=(8, 8), depths=(1, 1, 2, 1), dims=(8, 16, 32, 48), head_dim=16, num_classes=10)

pytestmark = pytest.mark.usefixtures('one_thread')


def _perturb(module: torch.nn.Module, scale: float = 0.2) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
        for name, b in module.named_buffers():
            if name.endswith('running_mean'):
                b.normal_(0, 0.1)
            elif name.endswith('running_var'):
                b.uniform_(0.5, 1.5)


# ----------------------------------------------------------------------------------------------------------------
# Blocks and attention against direct references (TF 'same' padding written out)


def _tf_same_pads(length: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


def _conv_same(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """A conv with TF 'SAME' padding written out (asymmetric zero padding, then no padding)."""
    (top, bottom), (left, right) = (_tf_same_pads(n, conv.kernel_size[0], conv.stride[0]) for n in x.shape[-2:])
    return F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, conv.stride, 0, 1, conv.groups)


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + 1e-3) * bn.weight.view(
        shape) + bn.bias.view(shape)


def _mbconv_reference(blk: MBConvBlock, x: torch.Tensor, stride: int, pool: int) -> torch.Tensor:
    """deeplab2's MBConvBlock.call written out (eval mode)."""
    shortcut = x
    if stride > 1:
        (top, bottom), (left, right) = (_tf_same_pads(n, pool, stride) for n in x.shape[-2:])
        pads = (left, right, top, bottom)
        ones = F.pad(torch.ones_like(x[:, :1]), pads)
        shortcut = F.avg_pool2d(F.pad(x, pads), pool, stride) / F.avg_pool2d(ones, pool, stride)
    if blk.shortcut_conv is not None:
        shortcut = F.conv2d(shortcut, blk.shortcut_conv.weight, blk.shortcut_conv.bias)
    y = F.conv2d(_bn(x, blk.pre_norm), blk.expand_conv.weight)
    y = F.gelu(_bn(y, blk.expand_norm))
    y = F.gelu(_bn(_conv_same(y, blk.depthwise_conv), blk.depthwise_norm))
    if blk.se is not None:  # squeeze-excitation with TF's default swish
        s = F.silu(F.conv2d(y.mean((2, 3), keepdim=True), blk.se.fc1.weight, blk.se.fc1.bias))
        y = y * torch.sigmoid(F.conv2d(s, blk.se.fc2.weight, blk.se.fc2.bias))
    return shortcut + F.conv2d(y, blk.shrink_conv.weight, blk.shrink_conv.bias)


@pytest.mark.parametrize('stride, in_chs, size, pool', [(2, 8, (9, 6), 2), (2, 16, (8, 7), 3), (1, 16, (5, 5), 2)])
def test_mbconv_block_matches_direct_reference(stride, in_chs, size, pool):
    blk = MBConvBlock(in_chs, 16, stride=stride, pool_size=pool).double().eval()
    _perturb(blk)
    assert blk.se.fc1.out_channels == 4  # int(0.25 * out), not of the expanded width
    x = torch.randn(2, in_chs, *size, dtype=torch.float64)
    torch.testing.assert_close(blk(x), _mbconv_reference(blk, x, stride, pool))


def _attention_reference(attn: MOATAttention, x: torch.Tensor, window: tuple[int, int] | None) -> torch.Tensor:
    """deeplab2's Attention written out over [B, H, W, C]: per window (or the whole map) q k^T / sqrt(d) plus
    table[key - query + size - 1] (the table resized bilinearly to the window, tf.image.resize), softmax, v, o;
    windows of a map that is not a multiple attend over their real tokens only."""
    B, H, W, C = x.shape
    wh, ww = window or (H, W)
    table = attn.rpb
    if table is not None and table.shape[-2:] != (2 * wh - 1, 2 * ww - 1):
        table = F.interpolate(table[None], size=(2 * wh - 1, 2 * ww - 1), mode='bilinear', align_corners=False)[0]
    q, k, v = (lin(x).view(B, H, W, attn.num_heads, attn.head_dim) for lin in (attn.q, attn.k, attn.v))
    out = torch.zeros_like(q)
    for i0 in range(0, H, wh):
        for j0 in range(0, W, ww):
            cells = [(i, j) for i in range(i0, min(i0 + wh, H)) for j in range(j0, min(j0 + ww, W))]
            qs = torch.stack([q[:, i, j] for i, j in cells], 1)  # [B, n, heads, d]
            ks = torch.stack([k[:, i, j] for i, j in cells], 1)
            vs = torch.stack([v[:, i, j] for i, j in cells], 1)
            logits = torch.einsum('bqhd,bkhd->bhqk', qs, ks) * attn.head_dim ** -0.5
            if table is not None:
                bias = torch.stack([torch.stack([table[:, ki - qi + wh - 1, kj - qj + ww - 1] for ki, kj in cells], -1)
                                    for qi, qj in cells], -2)  # [heads, q, k]
                logits = logits + bias
            o = torch.einsum('bhqk,bkhd->bqhd', logits.softmax(-1), vs)
            for n, (i, j) in enumerate(cells):
                out[:, i, j] = o[:, n]
    return attn.o(out.reshape(B, H, W, C))


@pytest.mark.parametrize('window, size, rpb_size', [
    (None, (7, 7), 7),      # global at the table's size
    (None, (5, 8), 7),      # global at another size: the table resized
    (None, (4, 3), None),   # no bias (the no_pe releases)
    ((4, 4), (8, 8), 4),    # windows of the table's size
    ((3, 3), (7, 5), 4),    # windows not dividing the map (padded keys masked), the table resized
])
def test_attention_matches_direct_reference(window, size, rpb_size):
    attn = MOATAttention(32, head_dim=16, window_size=window, rpb_size=rpb_size).double()
    _perturb(attn, 0.5)
    x = torch.randn(2, *size, 32, dtype=torch.float64, requires_grad=True)
    out, ref = attn(x), _attention_reference(attn, x, window)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    params = [x, *attn.parameters()]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)


def test_moat_block_is_mbconv_then_attention_without_mlp():
    blk = MOATBlock(16, 32, stride=2, head_dim=16, rpb_size=3).double().eval()
    _perturb(blk)
    assert blk.se is None and not hasattr(blk, 'mlp')
    x = torch.randn(1, 16, 6, 7, dtype=torch.float64)
    y = _mbconv_reference(blk, x, 2, 2).permute(0, 2, 3, 1)
    ref = y + _attention_reference(blk.attention, blk.attention_norm(y), None)
    torch.testing.assert_close(blk(x), ref.permute(0, 3, 1, 2))


# ----------------------------------------------------------------------------------------------------------------
# deeplab2 parity (fixture written by tools/moat_tf_parity.py from the TF model)


def _fixture_checkpoint(fixture: dict) -> dict:
    """The fixture's variables as a TF1 checkpoint holds them: EMA copies (the values the TF run used) and
    different raw values, so loading must take the EMA ones."""
    ckpt = {k: v.float().numpy() for k, v in fixture['variables'].items()}
    for k in fixture['ema']:
        ckpt[k + EMA] = ckpt[k]
        ckpt[k] = ckpt[k] + 1.
    return ckpt


@pytest.mark.parametrize('run', ['pool2', 'pool3'])
def test_deeplab2_parity_fixture(run):
    sys.path.insert(0, str(Path(__file__).parents[1] / 'tools'))
    from moat_tf_parity import ours_from_tf_config

    fixture = torch.load(FIXTURE, weights_only=True)
    entry = fixture['runs'][run]
    model = MOAT(**ours_from_tf_config(entry['cfg'], entry['pool_size'])).eval()
    model.load_state_dict(fit(from_tf(_fixture_checkpoint(fixture)), model), strict=True)
    for key, logits in entry['logits'].items():
        with torch.no_grad():
            torch.testing.assert_close(model(fixture['inputs'][key].float()), logits, atol=1e-5, rtol=1e-4)
    raw = MOAT(**ours_from_tf_config(entry['cfg'], entry['pool_size'])).eval()
    raw.load_state_dict(fit(from_tf(_fixture_checkpoint(fixture)), raw, use_ema=False), strict=True)
    with torch.no_grad():
        assert not torch.allclose(raw(fixture['inputs']['64x64'].float()), entry['logits']['64x64'])


# ----------------------------------------------------------------------------------------------------------------
# the converter on deeplab2's real variable names and shapes


def _synthetic_tf_checkpoint(seed: int = 0) -> tuple[dict, dict]:
    listing = json.loads(TF_VARIABLES.read_text())
    rng = np.random.default_rng(seed)
    ckpt = {k: rng.standard_normal(s).astype(np.float32) for k, s in listing['variables'].items()}
    for k in listing['ema']:
        ckpt[k + EMA] = ckpt[k] + 1.
    ckpt['global_step'] = np.array(1000)
    ckpt['moat/block_00_00/expand_conv/kernel/Momentum'] = np.zeros((1, 1, 32, 128), np.float32)  # an optimizer slot
    return ckpt, listing


def test_converter_maps_every_tf_variable_of_tiny_moat_0():
    ckpt, listing = _synthetic_tf_checkpoint()
    model = timm.create_model('tiny_moat_0').eval()
    state = fit(from_tf(ckpt), model)
    model.load_state_dict(state, strict=True)
    mapped = {tf_to_torch_name(k) for k in listing['variables']}
    assert mapped == {k for k in model.state_dict() if not k.endswith('num_batches_tracked')}
    sd = model.state_dict()
    # layouts, written out: EMA values (raw + 1), TF kernels HWIO / HWC1 / [C, heads, d] / [heads, d, C]
    e = {k: torch.from_numpy(ckpt[k + EMA] if k in listing['ema'] else ckpt[k]) for k in listing['variables']}
    torch.testing.assert_close(sd['stem.conv1.weight'], e['moat/stem/conv_0/kernel'].permute(3, 2, 0, 1))
    torch.testing.assert_close(sd['stem.norm1.running_var'], e['moat/stem/norm_0/moving_variance'])
    b = 'moat/block_02_03'
    torch.testing.assert_close(sd['stages.2.blocks.3.depthwise_conv.weight'],
                               e[f'{b}/depthwise_conv/depthwise_kernel'].permute(2, 3, 0, 1))
    torch.testing.assert_close(sd['stages.0.blocks.1.se.fc2.weight'],
                               e['moat/block_00_01/se/expand_conv2d/kernel'].permute(3, 2, 0, 1))
    torch.testing.assert_close(sd['stages.2.blocks.3.attention.rpb'], e[f'{b}/attention/relative_position_embedding'])
    x = torch.randn(3, 128)
    attn = model.stages[2].blocks[3].attention
    torch.testing.assert_close(attn.k(x), (torch.einsum('bc,chd->bhd', x, e[f'{b}/attention/k/weight'])
                                           + e[f'{b}/attention/k/bias']).reshape(3, 128))
    y = torch.randn(3, 4, 32)
    torch.testing.assert_close(attn.o(y.reshape(3, 128)), torch.einsum('bhd,hdc->bc', y, e[f'{b}/attention/o/weight'])
                               + e[f'{b}/attention/o/bias'])
    torch.testing.assert_close(sd['head.fc.weight'], e['moat/logits_head/kernel'][0, 0].t())
    torch.testing.assert_close(sd['head.norm.weight'], e['moat/final_layer_norm/gamma'])


def test_converter_accepts_tf2_names_and_reports_mismatches():
    ckpt, listing = _synthetic_tf_checkpoint()
    # TF2 variable names of deeplab2's Keras model: ':0' suffixes, the stem without its 'moat/stem/' scope
    tf2 = {(k.replace('moat/stem/', '') + ':0'): v for k, v in ckpt.items() if not k.endswith(EMA)}
    model = timm.create_model('tiny_moat_0').eval()
    model.load_state_dict(fit(from_tf(tf2), model), strict=True)
    torch.testing.assert_close(model.stem.conv2.bias, torch.from_numpy(ckpt['moat/stem/conv_1/bias']))
    headless = timm.create_model('tiny_moat_0', num_classes=0)
    headless.load_state_dict(fit(from_tf(ckpt), headless), strict=True)
    with pytest.raises(ValueError, match='bias tables'):  # a with-bias checkpoint for a no_pe model, and back
        fit(from_tf(ckpt), timm.create_model('tiny_moat_0_no_pe'))
    no_pe = {k: v for k, v in ckpt.items() if 'relative_position_embedding' not in k}
    with pytest.raises(ValueError, match='9 missing keys'):
        fit(from_tf(no_pe), model)
    with torch.device('meta'):
        with pytest.raises(ValueError, match='stage widths'):
            fit(from_tf(ckpt), timm.create_model('tiny_moat_1'))
        with pytest.raises(ValueError, match='not a MOAT checkpoint'):
            fit(from_tf({'resnet/conv1/kernel': np.zeros((3, 3, 3, 8))}), timm.create_model('tiny_moat_0'))


def test_load_pretrained_reads_tf_and_torch_files(tmp_path, monkeypatch):
    ckpt, _ = _synthetic_tf_checkpoint()
    monkeypatch.setattr('backbones.moat.read_tf_checkpoint', lambda path: ckpt)
    ref = timm.create_model('tiny_moat_0')
    ref.load_pretrained(str(tmp_path / 'release.tar.gz'))
    five = timm.create_model('tiny_moat_0', num_classes=5, in_chans=1)  # classifier left at init, stem adapted
    five.load_pretrained(str(tmp_path / 'release.tar.gz'))
    torch.testing.assert_close(five.stages[3].blocks[1].attention.rpb, ref.stages[3].blocks[1].attention.rpb)
    torch.testing.assert_close(five.stem.conv1.weight, ref.stem.conv1.weight.sum(1, keepdim=True))
    torch.save({'state_dict_ema': ref.state_dict()}, tmp_path / 'converted.pth')
    again = timm.create_model('tiny_moat_0')
    again.load_pretrained(str(tmp_path / 'converted.pth'))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ref.state_dict().values()))
    assert ref.pretrained_cfg['custom_load'] and ref.pretrained_cfg['url'].endswith(
        'tiny_moat0_imagenet_1k_256_w_position_embedding.tar.gz')


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_loader_reads_the_tf_release(tmp_path, monkeypatch):
    """``validate.py --checkpoint`` / train.py's weight options (zoo_common) and the downstream backbone's init_cfg
    read the official tarball through the family's reader (backbones._family.Family.read_weights), EMA first."""
    import zoo_common

    ckpt, _ = _synthetic_tf_checkpoint()
    monkeypatch.setattr('backbones.moat.read_tf_checkpoint', lambda path: ckpt)
    release = tmp_path / 'release.tar.gz'
    release.write_bytes(b'')
    ema, raw = timm.create_model('tiny_moat_0'), timm.create_model('tiny_moat_0')
    ema.load_pretrained(str(release))
    raw.load_pretrained(str(release), use_ema=False)
    assert not torch.equal(ema.stem.conv1.weight, raw.stem.conv1.weight)
    model = timm.create_model('tiny_moat_0')
    zoo_common.check_weights_file('tiny_moat_0', str(release), '--checkpoint')
    for use_ema, expected in ((None, ema), (True, ema), (False, raw)):
        zoo_common.load_model_weights(model, str(release), '--checkpoint', use_ema=use_ema)
        assert _same_weights(model.state_dict(), expected.state_dict())
    with pytest.raises(zoo_common.CliError, match='no such file'):
        zoo_common.check_weights_file('tiny_moat_0', str(tmp_path / 'none.tar.gz'), '--checkpoint')
    no_ema = {k: v for k, v in ckpt.items() if not k.endswith(EMA)}
    monkeypatch.setattr('backbones.moat.read_tf_checkpoint', lambda path: no_ema)
    with pytest.raises(zoo_common.CliError, match='holds no EMA weights'):
        zoo_common.load_model_weights(model, str(release), '--checkpoint', use_ema=True)
    monkeypatch.setattr('backbones.moat.read_tf_checkpoint', lambda path: {'resnet/conv1/kernel': np.zeros(3)})
    with pytest.raises(zoo_common.CliError, match='not a MOAT checkpoint'):
        zoo_common.load_model_weights(model, str(release), '--checkpoint')

    pytest.importorskip('mmdet')
    pytest.importorskip('mmcv.ops')
    from downstream import AttnZooBackbone

    monkeypatch.setattr('backbones.moat.read_tf_checkpoint', lambda path: ckpt)
    for use_ema, expected in ((None, ema), (False, raw)):
        backbone = AttnZooBackbone('tiny_moat_0', out_norm=False, use_ema=use_ema,
                                   init_cfg=dict(type='Pretrained', checkpoint=str(release)))
        backbone.init_weights()
        want = {k: v for k, v in expected.state_dict().items() if not k.startswith('head.')}
        got = {k.replace('stages_', 'stages.', 1): v for k, v in backbone.model.state_dict().items()}
        assert _same_weights(got, want)


def _fake_tensorflow(monkeypatch, variables: dict) -> list:
    """A stand-in ``tensorflow.train.load_checkpoint`` recording the prefixes it is given."""
    seen = []

    class Reader:
        def get_variable_to_shape_map(self):
            return {k: v.shape for k, v in variables.items()}

        def get_tensor(self, name):
            return variables[name]

    train = types.ModuleType('tensorflow.train')
    train.load_checkpoint = lambda prefix: seen.append(prefix) or Reader()
    tf = types.ModuleType('tensorflow')
    tf.train = train
    monkeypatch.setitem(sys.modules, 'tensorflow', tf)
    monkeypatch.setitem(sys.modules, 'tensorflow.train', train)
    return seen


def test_read_tf_checkpoint_finds_the_checkpoint_in_a_prefix_folder_or_tarball(tmp_path, monkeypatch):
    variables = {'moat/stem/conv_0/bias': np.arange(3.)}
    seen = _fake_tensorflow(monkeypatch, variables)
    folder = tmp_path / 'moat0_imagenet_1k_224_w_position_embedding'
    folder.mkdir()
    for suffix in ('.index', '.data-00000-of-00001'):
        (folder / f'model-ckpt-100{suffix}').write_bytes(b'x')
    prefix = str(folder / 'model-ckpt-100')
    assert read_tf_checkpoint(prefix) == variables and seen[-1] == prefix
    assert read_tf_checkpoint(str(folder)) == variables and seen[-1] == prefix
    tarball = tmp_path / 'release.tar.gz'
    with tarfile.open(tarball, 'w:gz') as tar:
        tar.add(folder, arcname=folder.name)
    assert read_tf_checkpoint(str(tarball)) == variables and seen[-1].endswith(f'{folder.name}/model-ckpt-100')
    with pytest.raises(FileNotFoundError, match='no TF checkpoint'):
        read_tf_checkpoint(str(tmp_path / 'none'))
    (folder / 'other.index').write_bytes(b'x')
    with pytest.raises(ValueError, match='found 2'):
        read_tf_checkpoint(str(folder))
    for module in ('tensorflow', 'tensorflow.train'):
        monkeypatch.setitem(sys.modules, module, None)  # not installed
    with pytest.raises(ImportError, match='needs tensorflow'):
        read_tf_checkpoint(prefix)


# ----------------------------------------------------------------------------------------------------------------
# parameter counts, FLOPs, any input size, dense prediction


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_param_counts_match_the_model_card(name):
    """Every variant against the checkpoints page (rounded to 0.1M there): equal after rounding, within 1.5%."""
    with torch.device('meta'):
        n = sum(p.numel() for p in timm.create_model(name).parameters()) / 1e6
    assert round(n, 1) == pytest.approx(PUBLISHED[name], abs=0.051) and n == pytest.approx(PUBLISHED[name], rel=0.015)


@pytest.mark.parametrize('name, res, gflops, rel', [('tiny_moat_0', 256, 1.1, 0.05), ('moat_0', 224, 5.7, 0.01)])
def test_fvcore_flops_match_the_model_card(name, res, gflops, rel):
    """fvcore FLOPs (the attention through ops' handle) against the card (1 decimal: tiny-MOAT-0's 1.06 G is 1.1)."""
    fvcore = pytest.importorskip('fvcore.nn')
    with torch.device('meta'):
        model = timm.create_model(name)
    model = model.to_empty(device='cpu').eval()
    with torch.no_grad():
        analysis = fvcore.FlopCountAnalysis(model, torch.randn(1, 3, res, res))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        flops = analysis.total() / 1e9
    assert analysis.by_operator()['scaled_dot_product_attention'] > 0
    assert round(flops, 1) == gflops and flops == pytest.approx(gflops, rel=rel)


def test_any_input_size_and_normalisation_per_variant():
    model = MOAT(**SMALL).eval()
    _perturb(model, 0.05)
    for size in [(61, 47), (32, 32), (17, 90)]:
        with torch.no_grad():
            out = model(torch.randn(2, 3, *size))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        model(torch.randn(2, 4, 32, 32))
    cfgs = {n: timm.create_model(n, pretrained=False, num_classes=0, device='meta').pretrained_cfg
            for n in ('moat_0', 'moat_2', 'tiny_moat_3_no_pe', 'moat_4_no_pe')}
    assert cfgs['moat_0']['mean'] == timm.data.IMAGENET_DEFAULT_MEAN and cfgs['tiny_moat_3_no_pe']['std'] == (
        timm.data.IMAGENET_DEFAULT_STD)
    assert cfgs['moat_2']['mean'] == cfgs['moat_4_no_pe']['std'] == (0.5, 0.5, 0.5)
    assert cfgs['moat_2']['input_size'] == (3, 384, 384) and cfgs['moat_4_no_pe']['url'].endswith('wo_position_'
                                                                                                   'embedding.tar.gz')


def test_window_attention_for_dense_prediction():
    """deeplab2's downstream setting: 14x14 / 7x7 windows, the last block of each MOAT stage global; windows of the
    the window's; a window equals global attention over its part of the map (the table resized alike)."""
    model = MOAT(**dict(SMALL, depths=(1, 1, 3, 2)), window_size=(None, None, (4, 4), (2, 2)),
                 global_attention_at_end=True, pool_size=3).eval()
    windows = [[b.attention.window_size for b in s.blocks] for s in model.stages[2:]]
    assert windows == [[(4, 4), (4, 4), None], [(2, 2), None]]
    _perturb(model, 0.05)
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 100, 75), intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 19), (13, 10), (7, 5), (4, 3)]
    blk = model.stages[2].blocks[0]
    x = torch.randn(1, 8, 8, 32)
    glob = MOATAttention(32, 16, None, rpb_size=14)
    glob.load_state_dict(blk.attention.state_dict())
    with torch.no_grad():
        out = blk.attention(x)
        torch.testing.assert_close(out[:, :4, 4:], glob(x[:, :4, 4:].contiguous()))


def test_timm_features_and_drop_path_schedule():
    model = timm.create_model('tiny_moat_0', features_only=True, depths=(1, 1, 2, 1))
    assert [i['reduction'] for i in model.feature_info] == [4, 8, 16, 32]
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [32, 64, 128, 256]
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0.
             for s in MOAT(**dict(SMALL, depths=(2, 3, 7, 2)), drop_path_rate=0.2, device='meta').stages
             for b in s.blocks]
    assert rates == pytest.approx([0.2 * i / 14 for i in range(14)])  # the official rate * block / total


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    model = MOAT(**SMALL).train()
    for m in model.modules():  # BatchNorm statistics would differ between the two passes
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    assert_grad_checkpointing_matches(model, torch.randn(2, 3, 40, 48))
    assert model.no_weight_decay() == {f'stages.{s}.blocks.{b}.attention.rpb' for s, d in ((2, 2), (3, 1))
                                       for b in range(d)}
