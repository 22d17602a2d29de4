"""BiFormer: the frozen official-parity fixture (BRA with and without auto_pad, STL), the stage-4 attention against a
direct reference, parameter counts, any input size, padding masked or not, gradients and gradient checkpointing,
official checkpoint mapping."""
import functools
import re
from pathlib import Path

import pytest
import timm
import torch
from _parity import fixture_input
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip

import backbones  # noqa: F401  (registers the models)
import ops
from backbones.biformer import BiFormer, BiLevelRoutingAttention, GlobalAttentionLePE
from backbones.checkpoint import fit

FIXTURE = Path(__file__).parent / 'data' / 'biformer_official.pt'
# counted from the official code (models/biformer.py, models/biformer_stl.py)
PARAMS = dict(biformer_tiny=13_142_760, biformer_small=25_536_232, biformer_base=56_804_968, biformer_stl=28_372_552)
TINY = dict(depths=(1, 1, 2, 1), embed_dims=(16, 32, 48, 64), head_dim=8)  # BiFormer's design, 1-2 blocks per stage

pytestmark = pytest.mark.usefixtures('one_thread')


@functools.cache
def _meta_model(name: str, **kwargs) -> BiFormer:
    """A meta-device model (shared between tests: only read)."""
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


def _to_official(state_dict: dict, swin_layout: bool = False) -> dict:
    """Our layout -> the official one (the inverse of the filter's renaming), to build official-layout inputs."""
    out = {}
    for k, v in state_dict.items():
        m = re.match(r'^stages\.(\d+)\.downsample\.(.*)$', k)
        k = f'downsample_layers.{m.group(1)}.{m.group(2)}' if m else re.sub(r'^stem\.', 'downsample_layers.0.', k)
        block = re.match(r'^(stages\.\d+\.blocks\.\d+\.)', k)
        if block and f'{block.group(1)}attn.qkv.bias' in state_dict:  # a BRA block (stage 4 has no qkv bias)
            k = k.replace('.attn.qkv.', '.attn.qkv.qkv.').replace('.attn.proj.', '.attn.wo.')
        k = k.replace('.mlp.fc1.', '.mlp.0.').replace('.mlp.fc2.', '.mlp.2.' if swin_layout else '.mlp.3.')
        if not swin_layout:
            k = re.sub(r'^stages\.(\d+)\.blocks\.', r'stages.\1.', k)
        out[k.replace('head.fc.', 'head.')] = v
    return out


# ----------------------------------------------------------------------------------------------------------------
# official parity (fixture written by tools/biformer_official_parity.py from the official code)


@pytest.mark.parametrize('key', ['biformer', 'stl'])
def test_official_parity_fixture(key):
    fixture = torch.load(FIXTURE, weights_only=True)[key]
    model = BiFormer(**fixture['cfg']).eval()
    state = {k: v.float() if v.is_floating_point() else v for k, v in fixture['state_dict'].items()}
    assert any(k.startswith('downsample_layers.') for k in state)  # the official layout
    model.load_state_dict(fit({'model': state}, model), strict=True)
    assert {(224, 224), (200, 232)} == set(fixture['logits'])  # divisible by 7 per stage, and auto_pad'ed
    for size, logits in fixture['logits'].items():
        with torch.no_grad():
            torch.testing.assert_close(model(fixture_input(*size)), logits, atol=1e-5, rtol=1e-4)


def test_global_attention_lepe_matches_direct_reference():
    """Stage 4: 8 heads, scale (dim / 8) ** -0.5, no qkv bias, LePE on the input; forward and every gradient."""
    torch.manual_seed(0)
    attn = GlobalAttentionLePE(32).double()
    assert attn.num_heads == 8 and attn.qkv.bias is None
    x = torch.randn(2, 5, 6, 32, dtype=torch.float64, requires_grad=True)

    def reference(x):
        B, H, W, C = x.shape
        q, k, v = (x.reshape(B, H * W, C) @ attn.qkv.weight.t()).reshape(B, H * W, 3, 8, 4).permute(2, 0, 3, 1, 4)
        out = ((q @ k.transpose(-1, -2)) * 4 ** -0.5).softmax(-1) @ v
        lepe = attn.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return attn.proj(out.transpose(1, 2).reshape(B, H, W, C) + lepe)

    out, ref = attn(x), reference(x)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    params = [x, *attn.parameters()]
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_counts_match_official(name):
    assert sum(p.numel() for p in _meta_model(name).parameters()) == PARAMS[name]


def test_variant_layouts():
    small = _meta_model('biformer_small')
    bra = [small.stages[i].blocks[0].attn for i in range(3)]
    assert all(isinstance(a, BiLevelRoutingAttention) for a in bra)
    assert [(a.num_heads, a.topk, a.n_win) for a in bra] == [(2, 1, 7), (4, 4, 7), (8, 16, 7)]
    assert [a.scale for a in bra] == [64 ** -0.5, 128 ** -0.5, 256 ** -0.5]  # qk_dim, not head_dim
    last = small.stages[3].blocks[0].attn
    assert isinstance(last, GlobalAttentionLePE) and last.num_heads == 8
    assert small.stages[0].blocks[0].pos_embed.kernel_size == (3, 3)
    stl = _meta_model('biformer_stl')
    assert stl.stages[0].blocks[0].pos_embed is None and stl.stem[0].kernel_size == (4, 4)
    assert [stl.stages[i].blocks[0].attn.num_heads for i in range(3)] == [3, 6, 12]
    assert _meta_model('biformer_small', n_win=16).stages[0].blocks[0].attn.n_win == 16  # the detection setting


def test_fvcore_flops_tiny_224():
    """fvcore FLOPs (BRA through the routed op's handle) within 3% of the paper's 2.2 G (specs/variants.csv)."""
    fvcore = pytest.importorskip('fvcore.nn')
    model = timm.create_model('biformer_tiny').eval()
    with torch.no_grad():
        fca = fvcore.FlopCountAnalysis(model, torch.randn(1, 3, 224, 224))
        fca.unsupported_ops_warnings(False)
        flops = fca.total()
    assert fca.by_operator()['routed_attention'] > 0
    assert abs(flops / 2.2e9 - 1) < 0.03


# ----------------------------------------------------------------------------------------------------------------
# model behaviour at low resolution


@pytest.mark.parametrize('size', [(32, 32), (50, 71), (97, 40)])
def test_any_input_size(size):
    model = timm.create_model('biformer_tiny', **TINY).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    hw, expect = list(size), []
    for i in range(4):  # 3x3 stride-2 convs with padding 1: ceil halving (twice in the stem)
        for _ in range(2 if i == 0 else 1):
            hw = [(n + 1) // 2 for n in hw]
        expect.append(tuple(hw))
    assert [tuple(f.shape[2:]) for f in feats] == expect
    stl = timm.create_model('biformer_stl', depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), head_dim=8).eval()
    with torch.no_grad():
        assert stl(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_padding_is_attended_unless_masked():
    """At a size that does not divide, the official auto_pad routes on and attends to the padded tokens;
    mask_padding leaves them out. At a size that divides, both are the same model."""
    torch.manual_seed(0)
    model = timm.create_model('biformer_tiny', **TINY).eval()
    masked = timm.create_model('biformer_tiny', **TINY, mask_padding=True).eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        for m in model.modules():  # padded tokens carry the qkv bias: make it matter
            if isinstance(m, BiLevelRoutingAttention):
                m.qkv.bias.normal_()
        masked.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(model(x), masked(x))
        x = torch.randn(1, 3, 200, 232)
        assert (model(x) - masked(x)).abs().max() > 1e-3


def test_masked_padding_does_not_leak(monkeypatch):
    """With mask_padding, whatever the padded tokens hold changes no real token's output (routing, keys, LePE);
    without it (the official auto_pad) it does."""
    torch.manual_seed(0)
    x = torch.randn(2, 9, 11, 16)  # padded to 14x14 for n_win 7 (2x2 regions)
    pad = ops.pad_to_multiple

    def noisy_pad(t, multiple, dims):  # the padded tokens get random content instead of zeros
        padded, size = pad(t, multiple, dims)
        noise = torch.randn_like(padded)
        noise[:, :size[0], :size[1]] = 0
        return padded + noise, size

    for masked in (True, False):
        attn = BiLevelRoutingAttention(16, 2, n_win=7, topk=4, mask_padding=masked).eval()
        with torch.no_grad():
            ref = attn(x)
            monkeypatch.setattr(ops, 'pad_to_multiple', noisy_pad)
            out = attn(x)
            monkeypatch.setattr(ops, 'pad_to_multiple', pad)
        if masked:
            torch.testing.assert_close(out, ref)
        else:
            assert (out - ref).abs().max() > 1e-2


def test_grad_checkpointing_and_training_step():
    torch.manual_seed(0)
    model = timm.create_model('biformer_tiny', **TINY, drop_path_rate=0.1)
    model.eval()  # no drop path randomness, BatchNorm in eval: identical forwards
    x = torch.randn(2, 3, 64, 72)  # stage maps 16x18, 8x9, 4x5, 2x3: padded to multiples of 7 in stages 1-3
    grads = assert_grad_checkpointing_matches(model, x)
    missing = [n for n, g in grads.items() if not torch.isfinite(g).all() or (g == 0).all()]
    assert not missing, missing


# ----------------------------------------------------------------------------------------------------------------
# official checkpoints, bad input


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_official_layout_loads_strictly_and_round_trips(wrap):
    official = assert_official_round_trip('biformer_tiny', TINY, _to_official, fit, wrap)
    assert 'downsample_layers.2.0.weight' in official and 'stages.0.0.attn.qkv.qkv.weight' in official
    assert 'stages.3.0.attn.qkv.weight' in official and 'stages.0.0.mlp.3.weight' in official


def test_full_official_layout_maps_onto_every_key_and_rejects_others():
    fixture = torch.load(FIXTURE, weights_only=True)
    for key, swin in (('biformer', False), ('stl', True)):  # the official layouts, as the official code saves them
        official = fixture[key]['state_dict']
        assert _to_official(fit(official, BiFormer(**fixture[key]['cfg'])), swin).keys() == \
            official.keys()
    for name in sorted(PARAMS):
        model = _meta_model(name)
        ours = fit(_to_official(model.state_dict(), name == 'biformer_stl'), model)
        assert ours.keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match=r'biformer_small: .*stage widths: checkpoint \[96, 192, 384, 768\] vs '
                                         r'model \[64, 128, 256, 512\]'):
        fit(_to_official(_meta_model('biformer_base').state_dict()), _meta_model('biformer_small'))
    with pytest.raises(ValueError, match=r'blocks per stage: checkpoint \[2, 2, 8, 2\] vs model \[4, 4, 18, 4\]'):
        fit(_to_official(_meta_model('biformer_tiny').state_dict()), _meta_model('biformer_small'))
    with pytest.raises(ValueError, match='not a BiFormer checkpoint'):
        fit(_meta_model('glnet_4g').state_dict(), _meta_model('biformer_tiny'))


def test_bad_input():
    model = timm.create_model('biformer_tiny', **TINY)
    with pytest.raises(ValueError, match=r'expected an image batch \[B, 3, H, W\]'):
        model(torch.randn(1, 4, 32, 32))
    stl = timm.create_model('biformer_stl', depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), head_dim=8)
    with pytest.raises(ValueError, match='at least 32 px'):
        stl(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match='one entry per stage'):
        BiFormer(depths=(1, 1, 1))
    with pytest.raises(ValueError, match=r'topk must be in \[1, n_win \*\* 2 = 4\]'):
        BiFormer(n_win=2)
    with pytest.raises(ValueError, match='topk must be > 0'):
        BiFormer(topks=(1, 4, 16, -1))
    with pytest.raises(ValueError, match='divisible by num_heads'):
        BiLevelRoutingAttention(16, 3, 7, 1)
