"""GLNet: GLMix and the MHSA layout against direct references, the frozen official-parity fixture, parameter counts,
the token-labelling head, any input size, gradient checkpointing, official checkpoint mapping and EMA choice."""
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from _parity import fixture_input
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import ema_first, fit
from backbones.glnet import GLMixBlock, GLNet, MultiheadAttention

FIXTURE = Path(__file__).parent / 'data' / 'glnet_official.pt'
PARAMS = dict(glnet_stl=30_296_786, glnet_stl_paramslot=30_481_106, glnet_4g=27_001_593, glnet_9g=60_010_617,
              glnet_16g=106_055_161, glnet_4g_tklb=27_514_593, glnet_9g_tklb=60_779_617)
TINY = dict(depths=(1, 1, 2, 1), embed_dims=(32, 64, 96, 128))  # glnet_4g's design, 1-2 blocks per stage


def _meta_model(name: str, **kwargs) -> GLNet:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


# Our layout -> the official one, to build official-layout inputs: the layout's rename table inverted
_to_official = GLNet.checkpoint_layout.to_official


# ----------------------------------------------------------------------------------------------------------------
# GLMix and attention


def test_multihead_attention_is_nn_multihead_attention():
    torch.manual_seed(0)
    ours = MultiheadAttention(24, 3).double()
    theirs = torch.nn.MultiheadAttention(24, 3, batch_first=True).double()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.3)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x, x, x, need_weights=False)[0])


def _glmix_reference(blk: GLMixBlock, x: torch.Tensor) -> torch.Tensor:
    """The official GLMix block's forward written out (explicit logits and softmaxes, torch's MultiheadAttention)."""
    B, C, H, W = x.shape
    mha = torch.nn.MultiheadAttention(C, blk.relation_mha.num_heads, batch_first=True)
    mha.in_proj_weight, mha.in_proj_bias = blk.relation_mha.in_proj_weight, blk.relation_mha.in_proj_bias
    mha.out_proj = blk.relation_mha.out_proj  # the block's own parameters: their gradients compare too
    slots0 = F.adaptive_avg_pool2d(x, blk.pool_size).flatten(2).transpose(1, 2) if blk.slot_init == 'ada_avgpool' \
        else blk.init_slots
    if hasattr(blk, 'pos_conv'):
        x = x + blk.pos_conv(x)
    y = blk.norm1(x)
    t = y.flatten(2).transpose(1, 2)
    logits = F.normalize(slots0, dim=-1) @ (blk.slot_scale * F.normalize(t, dim=-1).transpose(1, 2))
    slots = logits.softmax(-1) @ t
    slots = mha(slots, slots, slots, need_weights=False)[0]
    out = (logits.transpose(1, 2).softmax(-1) @ slots).transpose(1, 2).reshape(B, C, H, W) + blk.feature_conv(y)
    x = x + blk.ls1(out)
    return x + blk.ls2(blk.mlp(blk.norm2(x)))


@pytest.mark.parametrize('slot_init, size, kwargs', [
    ('ada_avgpool', (7, 5), dict(cpe_ks=3, mlp_dw=True, layerscale=0.5)),  # 4G-style, odd sizes
    ('param', (6, 9), dict()),                                               # STL paramslot-style
    ('ada_avgpool', (3, 2), dict()),                                         # map smaller than the 4x4 pooling
])
def test_glmix_matches_direct_reference_forward_and_grads(slot_init, size, kwargs):
    torch.manual_seed(0)
    blk = GLMixBlock(16, 2, num_slots=16, slot_init=slot_init, mlp_ratio=2., **kwargs).double()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.2 * torch.randn_like(p))
        blk.slot_scale.fill_(3.)
    x = torch.randn(2, 16, *size, dtype=torch.float64, requires_grad=True)
    out, ref = blk(x), _glmix_reference(blk, x)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(out)
    params = [x, blk.slot_scale, *(p for n, p in blk.named_parameters() if n != 'slot_scale')]
    grads = torch.autograd.grad(out, params, g)
    for a, b in zip(grads, torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert grads[1].abs() > 0  # the learnable scale folded into the queries keeps its gradient


# ----------------------------------------------------------------------------------------------------------------
# official parity (fixture written by tools/glnet_official_parity.py from the official code)


@pytest.mark.parametrize('key', ['g', 'stl'])
def test_official_parity_fixture(key):
    sys.path.insert(0, str(Path(__file__).parents[1] / 'tools'))

    fixture = torch.load(FIXTURE, weights_only=True)[key]
    model = GLNet(**fixture['cfg']).eval()
    state = {k: v.float() if v.is_floating_point() else v for k, v in fixture['state_dict'].items()}
    assert any(k.startswith('downsample_layers.') for k in state)  # the official layout
    model.load_state_dict(fit({'model': state}, model), strict=True)
    for size, logits in fixture['logits'].items():
        with torch.no_grad():
            torch.testing.assert_close(model(fixture_input(*size)), logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_counts_match_official(name):
    assert sum(p.numel() for p in _meta_model(name).parameters()) == PARAMS[name]


def test_variant_layouts():
    g4 = _meta_model('glnet_4g')
    kinds = [type(b).__name__ for b in g4.stages[2].blocks]
    assert kinds[:4] == ['GLMixBlock', 'MHSANCHWBlock'] * 2 and len(kinds) == 18
    assert {type(b).__name__ for b in g4.stages[3].blocks} == {'MHSANCHWBlock'}
    first = g4.stages[0].blocks[0]
    assert first.relation_mha.num_heads == 2 and isinstance(first.ls1, torch.nn.Identity)
    assert _meta_model('glnet_16g').stages[0].blocks[0].ls1.gamma.shape == (1, 128, 1, 1)
    stl = _meta_model('glnet_stl')
    assert type(stl.stages[3].blocks[0]).__name__ == 'MHSABlock'
    assert _meta_model('glnet_stl_paramslot').stages[0].blocks[0].init_slots.shape == (1, 64, 96)


# ----------------------------------------------------------------------------------------------------------------
# model behaviour at low resolution


def test_token_label_head_is_the_official_inference_output():
    torch.manual_seed(0)
    model = timm.create_model('glnet_4g_tklb', **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        tokens = feats.flatten(2).transpose(1, 2)
        expect = model.head.fc(feats.mean((2, 3))) + 0.5 * model.head.aux_head(tokens).max(1)[0]
        torch.testing.assert_close(model(x), expect)
    model.reset_classifier(0)
    assert model.head.aux_head is None and model(x).shape == (2, 128)


@pytest.mark.parametrize('size', [(32, 32), (50, 71), (97, 40)])
def test_any_input_size(size):
    model = timm.create_model('glnet_4g', **TINY).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    hw, expect = list(size), []
    for i in range(4):  # 3x3 stride-2 convs with padding 1: ceil halving (twice in the stem)
        for _ in range(2 if i == 0 else 1):
            hw = [(n + 1) // 2 for n in hw]
        expect.append(tuple(hw))
    assert [tuple(f.shape[2:]) for f in feats] == expect


def test_grad_checkpointing_and_training_step():
    torch.manual_seed(0)
    model = timm.create_model('glnet_stl', depths=(1, 1, 1, 1), drop_path_rate=0.1)
    model.eval()  # no drop path randomness, BatchNorm in eval: identical forwards
    x = torch.randn(2, 3, 64, 64)
    grads = assert_grad_checkpointing_matches(model, x)
    missing = [n for n, g in grads.items() if not torch.isfinite(g).all() or (g == 0).all()]
    assert not missing, missing


# ----------------------------------------------------------------------------------------------------------------
# official checkpoints, EMA default, bad input


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_official_layout_loads_strictly_and_round_trips(wrap):
    official = assert_official_round_trip('glnet_4g_tklb', TINY, _to_official, fit, wrap)
    assert 'downsample_layers.2.0.weight' in official and 'tklb_aux_head.weight' in official


def test_full_official_layout_maps_onto_every_key_and_rejects_others():
    for name in ('glnet_16g', 'glnet_stl_paramslot', 'glnet_9g_tklb'):
        model = _meta_model(name)
        assert fit(_to_official(model.state_dict()), model).keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match=r'glnet_4g: .*stage widths: checkpoint \[96, 192, 384, 768\] vs model '
                                         r'\[64, 128, 256, 512\]'):
        fit(_to_official(_meta_model('glnet_9g').state_dict()), _meta_model('glnet_4g'))
    with pytest.raises(ValueError, match=r'blocks per stage: checkpoint \[2, 2, 6, 2\] vs model \[4, 4, 18, 4\]'):
        fit(_to_official(_meta_model('glnet_stl').state_dict()), _meta_model('glnet_9g'))
    with pytest.raises(ValueError, match='not a GLNet checkpoint'):
        fit(_meta_model('litv2_small').state_dict(), _meta_model('glnet_4g'))


def test_ema_weights_by_default_for_glnet_16g_only():
    assert ema_first('glnet_16g') and not ema_first('glnet_4g') and not ema_first('glnet_stl')
    model = timm.create_model('glnet_stl', depths=(1, 1, 1, 1))
    raw = _to_official(model.state_dict())
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    got = fit({'model': raw, 'model_ema': ema}, model)
    assert torch.equal(got['norm.weight'], raw['norm.weight'])
    model.pretrained_cfg = dict(model.pretrained_cfg, architecture='glnet_16g')  # same family rule, 16G's name
    assert ema_first(model)
    got = fit({'model': raw, 'model_ema': ema}, model)
    assert torch.equal(got['norm.weight'], ema['norm.weight'])


def test_bad_input():
    model = timm.create_model('glnet_stl', depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r'expected an image batch \[B, 3, H, W\]'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='one entry per stage'):
        GLNet(depths=(1, 1, 1))
    with pytest.raises(ValueError, match='mixing_mode'):
        GLNet(mixing_modes=('glmix', 'glmix', 'glmix', 'swin'))
    with pytest.raises(ValueError, match='square number'):
        GLMixBlock(16, 2, num_slots=10)
