"""LITv2: HiLo against a direct reference, DTM's deformable conv layout (and against mmcv), the frozen official-parity
fixture, parameter counts, the timm contract on litv2_small at low resolution, official checkpoint mapping."""
import math
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from _parity import fixture_input
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip
from timm.optim import create_optimizer_v2

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import fit
from backbones.litv2 import DeformConv2dPack, HiLo, LITv2

FIXTURE = Path(__file__).parent / 'data' / 'litv2_official.pt'
PARAMS = dict(litv2_small=27_844_000, litv2_medium=48_830_368, litv2_base=86_520_704, litv2_base_384=86_520_704)
SHORT = dict(depths=(1, 1, 1, 1), drop_path_rate=0.)  # litv2_small's widths and heads, one block per stage


def _meta_model(name: str, **kwargs) -> LITv2:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


# Our layout -> the official one, to build official-layout inputs: the layout's rename table inverted
_to_official = LITv2.checkpoint_layout.to_official


# ----------------------------------------------------------------------------------------------------------------
# HiLo


def _hilo_reference(m: HiLo, x: torch.Tensor) -> torch.Tensor:
    """HiLo written out directly (explicit window partition and softmax), padding as the official detection code."""
    B, H, W, C = x.shape
    s, d = m.ws, m.head_dim
    xp = F.pad(x, (0, 0, 0, -W % s, 0, -H % s))
    Hp, Wp = xp.shape[1:3]
    outs = []
    if m.h_heads:
        win = xp.view(B, Hp // s, s, Wp // s, s, C).transpose(2, 3).reshape(B, -1, s * s, C)
        q, k, v = m.h_qkv(win).view(B, -1, s * s, 3, m.h_heads, d).permute(3, 0, 1, 4, 2, 5)
        o = ((q @ k.transpose(-2, -1)) * m.scale).softmax(-1) @ v  # B, windows, heads, s*s, d
        o = o.transpose(2, 3).reshape(B, Hp // s, Wp // s, s, s, m.h_dim).transpose(2, 3).reshape(B, Hp, Wp, -1)
        outs.append(m.h_proj(o)[:, :H, :W])
    if m.l_heads:
        q = m.l_q(xp).view(B, Hp * Wp, m.l_heads, d).transpose(1, 2)
        src = xp if s == 1 else F.avg_pool2d(xp.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
        k, v = m.l_kv(src.reshape(B, -1, C)).view(B, -1, 2, m.l_heads, d).permute(2, 0, 3, 1, 4)
        o = (((q @ k.transpose(-2, -1)) * m.scale).softmax(-1) @ v).transpose(1, 2).reshape(B, Hp, Wp, -1)
        outs.append(m.l_proj(o)[:, :H, :W])
    return torch.cat(outs, -1)


@pytest.mark.parametrize('heads, ws, alpha, size', [
    (4, 2, 0.9, (5, 7)),   # LITv2's split (int(4 * 0.9) = 3 Lo-Fi, 1 Hi-Fi), odd sizes: padded
    (4, 3, 0.5, (7, 6)),   # another window, padded on one axis
    (3, 2, 0.0, (4, 6)),   # Hi-Fi only, divisible
    (3, 2, 1.0, (3, 5)),   # Lo-Fi only
    (4, 1, 0.9, (5, 3)),   # ws = 1: every head a plain MHSA head
])
def test_hilo_matches_direct_reference_forward_and_grads(heads, ws, alpha, size):
    torch.manual_seed(0)
    m = HiLo(16 * heads, heads, ws, alpha, qkv_bias=True).double()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, *size, 16 * heads, dtype=torch.float64, requires_grad=True)
    out = m(x)
    ref = _hilo_reference(m, x)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *m.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x, *m.parameters()], g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_hilo_head_split_and_bias_as_the_official_configs():
    model = _meta_model('litv2_small')
    s3, s4 = model.stages[2].blocks[0].attn, model.stages[3].blocks[0].attn
    assert (s3.l_heads, s3.h_heads, s3.ws) == (10, 2, 2) and s3.scale == 32 ** -0.5
    assert (s4.l_heads, s4.h_heads, s4.ws) == (24, 0, 1) and not hasattr(s4, 'h_qkv')
    assert s3.l_q.bias is not None and s3.h_qkv.bias is not None  # config QKV_BIAS: True over HiLo's False
    assert not any(hasattr(b, 'attn') for st in model.stages[:2] for b in st.blocks)  # stages 1-2: MLP-only
    base = _meta_model('litv2_base').stages[2].blocks[0].attn
    assert (base.l_heads, base.h_heads) == (14, 2)
    with pytest.raises(ValueError, match='divisible by num_heads'):
        HiLo(10, 3)
    with pytest.raises(ValueError, match='window_size'):
        HiLo(12, 3, window_size=0)


# ----------------------------------------------------------------------------------------------------------------
# DTM's deformable conv


def test_deform_conv_offset_layout_is_dy_dx_per_tap():
    """An offset of (dy, dx) = (1, 0) on every tap samples one row lower: a plain conv of the map shifted up."""
    torch.manual_seed(0)
    conv = DeformConv2dPack(3, 5, kernel_size=2, stride=2)
    x = torch.randn(1, 3, 9, 8)
    with torch.no_grad():
        conv.conv_offset.bias.copy_(torch.tensor([1., 0.] * 4))
        shifted = F.pad(x[:, :, 1:], (0, 0, 0, 1))  # row r+1 at r, zeros past the bottom as deform conv samples
        torch.testing.assert_close(conv(x), F.conv2d(shifted, conv.weight, conv.bias, stride=2))
        conv.conv_offset.bias.copy_(torch.tensor([0., 1.] * 4))  # (0, 1): one column right
        torch.testing.assert_close(conv(x), F.conv2d(F.pad(x[..., 1:], (0, 1)), conv.weight, conv.bias, stride=2))


def test_deform_conv_matches_mmcv_forward_and_backward():
    mmcv_ops = pytest.importorskip('mmcv.ops')
    torch.manual_seed(0)
    ours = DeformConv2dPack(6, 8, kernel_size=2, stride=2)
    theirs = mmcv_ops.DeformConv2dPack(6, 8, kernel_size=2, stride=2, bias=False)
    with torch.no_grad():
        torch.nn.init.normal_(ours.conv_offset.weight, std=0.3)  # fractional offsets, some outside the map
        torch.nn.init.normal_(ours.conv_offset.bias, std=0.5)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if k != 'bias'})
    x = torch.randn(2, 6, 11, 10, requires_grad=True)
    a = ours(x)
    b = theirs(x) + ours.bias.view(1, -1, 1, 1)  # mmcv's deform conv has no bias
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, [x, ours.weight, ours.conv_offset.weight, ours.conv_offset.bias], g)
    gb = torch.autograd.grad(b, [x, theirs.weight, theirs.conv_offset.weight, theirs.conv_offset.bias], g)
    for name, u, v in zip(['input', 'weight', 'conv_offset.weight', 'conv_offset.bias'], ga, gb):
        torch.testing.assert_close(u, v, atol=1e-4, rtol=1e-4, msg=name)


# ----------------------------------------------------------------------------------------------------------------
# official parity (fixture written by tools/litv2_official_parity.py from the official code)


def test_official_parity_fixture():
    fixture = torch.load(FIXTURE, weights_only=True)
    cfg = dict(fixture['cfg'])
    model = LITv2(**cfg, drop_path_rate=0.).eval()
    state = {k: v.float() if v.is_floating_point() else v for k, v in fixture['state_dict'].items()}
    assert any(k.startswith('layers.2.blocks.0.attn.h_qkv') for k in state)  # the official layout
    model.load_state_dict(fit({'model': state}, model), strict=True)

    with torch.no_grad():
        for size, logits in fixture['logits'].items():
            torch.testing.assert_close(model(fixture_input(size, size)), logits, atol=1e-4, rtol=0)
        feats = model.forward_intermediates(fixture_input(*fixture['det_size']), intermediates_only=True)
    for i, ref in fixture['det_features'].items():  # the official detection backbone: output LayerNorms at init
        got = F.layer_norm(feats[i].permute(0, 2, 3, 1), feats[i].shape[1:2]).permute(0, 3, 1, 2)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    assert tuple(feats[2].shape[2:]) == (5, 5)  # the Hi-Fi stage ran on a padded map


# ----------------------------------------------------------------------------------------------------------------
# variants, timm contract


@pytest.mark.parametrize('name', list(PARAMS))
def test_variant_params_and_cfg(name):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    cfg = model.pretrained_cfg
    assert cfg['url'].startswith('https://github.com/ziplab/LITv2/releases/download/v1.0/')
    assert cfg['license'] == 'apache-2.0' and cfg['paper_ids'] == 'arXiv:2205.13213'
    res = 384 if name.endswith('384') else 224
    assert cfg['input_size'] == (3, res, res) and cfg['pool_size'] == (res // 32,) * 2
    assert cfg['crop_pct'] == (1.0 if res == 384 else 0.875) and cfg['interpolation'] == 'bicubic'
    assert isinstance(model.get_submodule(cfg['first_conv']), torch.nn.Conv2d)
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]
    assert model.no_weight_decay() == set()
    assert sorted(timm.list_models('litv2_*')) == sorted(PARAMS)


def test_small_forward_backward_features_intermediates():
    torch.manual_seed(0)
    model = timm.create_model('litv2_small', drop_path_rate=0.)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    assert model.stages[1].downsample.dconv.conv_offset.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(model.forward_head(final), model(x))
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
        nhwc = model.forward_intermediates(x, indices=[0], output_fmt='NHWC', intermediates_only=True)
    assert torch.allclose(normed[0], final) and torch.equal(nhwc[0], inter[0].permute(0, 2, 3, 1))
    assert [tuple(f.shape[1:]) for f in inter] == [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]

    features = timm.create_model('litv2_small', features_only=True, out_indices=(1, 3))
    features.load_state_dict({re.sub(r'^stages\.(\d+)', r'stages_\1', k): v for k, v in model.state_dict().items()
                              if not k.startswith(('norm.', 'head.'))})
    features.eval()
    assert features.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        for got, i in zip(features(x), (1, 3)):
            torch.testing.assert_close(got, inter[i])

    kept = model.prune_intermediate_layers(indices=[1])
    assert kept == [1] and len(model.stages) == 2 and model.num_features == 192
    with torch.no_grad():
        assert model(x).shape == (2, 192, 8, 8)


@pytest.mark.parametrize('size', [(29, 29), (50, 71), (97, 40)])
def test_any_input_size(size):
    model = timm.create_model('litv2_small', **SHORT).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
        assert model(torch.randn(1, 3, *size)).shape == (1, 1000)
    expect, hw = [], [math.ceil(s / 4) for s in size]
    for _ in range(4):  # stem pads to a multiple of 4, each DTM drops an odd last row / column
        expect.append(tuple(hw))
        hw = [n // 2 for n in hw]
    assert [tuple(f.shape[2:]) for f in feats] == expect


def test_grad_checkpointing_classifier_and_optimizer_groups():
    torch.manual_seed(0)
    model = timm.create_model('litv2_small', **SHORT)
    x = torch.randn(2, 3, 32, 32)
    assert_grad_checkpointing_matches(model, x)

    model.reset_classifier(10)
    assert model(x).shape == (2, 10)
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    assert len({g['lr_scale'] for g in opt.param_groups}) > 3
    no_decay = {id(p) for g in opt.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert id(model.stages[1].downsample.norm_layer.weight) in no_decay
    assert id(model.stages[2].blocks[0].attn.h_qkv.weight) not in no_decay


# ----------------------------------------------------------------------------------------------------------------
# official checkpoints, bad input


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_official_layout_loads_strictly_and_round_trips(wrap):
    official = assert_official_round_trip('litv2_small', SHORT, _to_official, fit, wrap)
    assert 'layers.2.downsample.dconv.conv_offset.weight' in official and 'head.weight' in official


def test_full_official_layout_maps_onto_every_key():
    model = _meta_model('litv2_base')
    official = _to_official(model.state_dict())
    assert fit(official, model).keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match=r'litv2_small: .*blocks per stage: checkpoint \[2, 2, 18, 2\] vs model '
                                         r'\[2, 2, 6, 2\]'):
        fit(_to_official(_meta_model('litv2_medium').state_dict()), _meta_model('litv2_small'))
    with pytest.raises(ValueError, match=r'stage widths: checkpoint \[128, 256, 512, 1024\] vs model'):
        fit(official, _meta_model('litv2_medium'))
    with pytest.raises(ValueError, match='not a LITv2 checkpoint'):
        fit(_meta_model('nat_mini').state_dict(), _meta_model('litv2_small'))


def test_bad_input():
    model = timm.create_model('litv2_small', **SHORT)
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\] \(in_chans=3\), got a tensor of shape \(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='at least 29 px'):
        model(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match='one entry per stage'):
        LITv2(depths=(1, 1, 1), num_heads=(1, 2, 4, 8))
