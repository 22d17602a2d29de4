"""L2ViT: the frozen official-parity fixture, parameter counts, block layout, the timm contract pieces on a short
l2vit_tiny at low resolution, any input size (LWA window padding), official checkpoint mapping (raw vs EMA weights),
bf16 autocast of an LGA block, bad input."""
import re
from pathlib import Path

import pytest
import timm
import torch
from _parity import fixture_input
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip
from timm.optim import create_optimizer_v2

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import fit
from backbones.l2vit import L2ViT, LGABlock, LWABlock

FIXTURE = Path(__file__).parent / 'data' / 'l2vit_official.pt'
PARAMS = dict(l2vit_tiny=28_596_781, l2vit_small=50_199_157, l2vit_base=88_577_188, l2vit_base_384=88_577_188)
SHORT = dict(depths=(2, 2, 2, 2), drop_path_rate=0.)  # l2vit_tiny's widths and heads, one LWA + one LGA per stage


def _meta_model(name: str, **kwargs) -> L2ViT:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


# Our layout -> the official one, to build official-layout inputs: the layout's rename table inverted
_to_official = L2ViT.checkpoint_layout.to_official


def test_official_parity_fixture():
    """Written by tools/l2vit_official_parity.py from the official l2vit.py (perturbed weights, fp32 logits)."""
    fixture = torch.load(FIXTURE, weights_only=True)
    model = L2ViT(**fixture['cfg']).eval()
    state = {k: v.float() if v.is_floating_point() else v for k, v in fixture['state_dict'].items()}
    assert 'downsample_layers.0.proj.proj.0.weight' in state and 'stages.3.1.attn.temperature' in state
    model.load_state_dict(fit({'model': state}, model), strict=True)
    with torch.no_grad():
        for (h, w), logits in fixture['logits'].items():  # 50x71: stem, merges and every LWA window pad
            torch.testing.assert_close(model(fixture_input(h, w)), logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize('name', list(PARAMS))
def test_variant_params_and_cfg(name):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    cfg = model.pretrained_cfg
    assert cfg['url'].startswith('https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/L2ViT-')
    assert cfg['paper_ids'] == 'arXiv:2501.16182'
    assert cfg['input_size'] == ((3, 384, 384) if name.endswith('384') else (3, 224, 224))
    assert isinstance(model.get_submodule(cfg['first_conv']), torch.nn.Conv2d)
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]
    window = 12 if name.endswith('384') else 7
    for stage in model.stages:  # LWA on even blocks, LGA on odd ones
        assert [type(b) for b in stage.blocks] == [LWABlock, LGABlock] * (len(stage.blocks) // 2)
        assert stage.blocks[0].attn.window_size == (window, window)
        assert stage.blocks[0].attn.relative_position_bias_table is None
    assert sorted(timm.list_models('l2vit_*')) == sorted(PARAMS)


def test_fvcore_flops_match_paper():
    fvcore = pytest.importorskip('fvcore.nn')
    model = _meta_model('l2vit_tiny').to_empty(device='cpu').eval()  # FLOPs need shapes only
    analysis = fvcore.FlopCountAnalysis(model, torch.randn(1, 3, 224, 224))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert analysis.by_operator()['neighborhood_attention'] > 0  # LWA through the shared window op
    assert analysis.total() / 1e9 == pytest.approx(4.7, rel=0.03)  # README: 4.7 GFLOPs


def test_forward_backward_features_intermediates():
    torch.manual_seed(0)
    model = timm.create_model('l2vit_tiny', **SHORT)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    assert model.stages[0].blocks[1].attn.temperature.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(model.forward_head(final), model(x))
    assert [tuple(f.shape[1:]) for f in inter] == [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]

    features = timm.create_model('l2vit_tiny', features_only=True, out_indices=(1, 3), **SHORT)
    features.load_state_dict({re.sub(r'^stages\.(\d+)', r'stages_\1', k): v for k, v in model.state_dict().items()
                              if not k.startswith(('norm.', 'head.'))})
    features.eval()
    with torch.no_grad():
        for got, i in zip(features(x), (1, 3)):
            torch.testing.assert_close(got, inter[i])


@pytest.mark.parametrize('size', [(33, 47), (97, 40), (1, 1)])
def test_any_input_size(size):
    model = timm.create_model('l2vit_tiny', **SHORT).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    hw = [-(-n // 4) for n in size]  # the stem pads to a multiple of 4, each merge to even sizes
    expect = [tuple(hw)]
    for _ in range(3):
        hw = [-(-n // 2) for n in hw]
        expect.append(tuple(hw))
    assert [tuple(f.shape[2:]) for f in feats] == expect


def test_window_padding_option():
    """'masked' equals the official 'tokens' padding where the windows divide the maps, and differs elsewhere."""
    torch.manual_seed(0)
    official = timm.create_model('l2vit_tiny', **SHORT).eval()
    masked = timm.create_model('l2vit_tiny', **SHORT, window_padding='masked').eval()
    masked.load_state_dict(official.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 56, 56)  # 14x14 / 7x7 maps in stages 1-2; 4x4 and 2x2 (padded) after
        a = official.forward_intermediates(x, intermediates_only=True)
        b = masked.forward_intermediates(x, intermediates_only=True)
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(a[3], b[3], atol=1e-4)
    with pytest.raises(ValueError, match='window_padding'):
        L2ViT(window_padding='zeros')


def test_lga_block_bf16_autocast_within_bf16_tolerance():
    """The official code trains without AMP; here the linear attention's state and normaliser stay fp32 under
    autocast, so a bf16 LGA block over 4096 tokens stays within bf16 tolerance of its fp32 output."""
    torch.manual_seed(0)
    block = LGABlock(64, 2).eval()
    x = torch.randn(1, 64, 64, 64)
    with torch.no_grad():
        block.attn.qkv.weight.mul_(0.12)  # denominators q . sum(k) on both sides of the clamp at 100
        block.attn.qkv.bias.zero_()
        q, k, _ = block.attn.qkv(block.norm1(block.cpe[0](x)).flatten(1, 2)).unflatten(-1, (3, 2, 32)).unbind(2)
        clamped = (torch.einsum('bnhd,bhd->bnh', q.relu(), k.relu().sum(1)) < 100).float().mean()
        want = block(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = block(x)
            assert block.attn(block.norm1(x)).dtype == torch.bfloat16
    assert 0.2 < clamped < 0.8, clamped
    err = (got.float() - want).norm() / want.norm()
    assert err < 1e-2, err


def test_grad_checkpointing_classifier_and_optimizer_groups():
    torch.manual_seed(0)
    model = timm.create_model('l2vit_tiny', **SHORT)
    x = torch.randn(2, 3, 32, 32)
    assert_grad_checkpointing_matches(model, x)
    model.reset_classifier(10)
    assert model(x).shape == (2, 10)
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    assert len({g['lr_scale'] for g in opt.param_groups}) > 3
    decayed = {id(p) for g in opt.param_groups if g['weight_decay'] > 0 for p in g['params']}
    assert id(model.stages[0].blocks[1].attn.temperature) in decayed  # [heads, 1, 1]: decayed, as officially


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_official_layout_loads_strictly_and_round_trips(wrap):
    official = assert_official_round_trip('l2vit_tiny', SHORT, _to_official, fit, wrap)
    assert {'downsample_layers.0.proj.proj.1.running_var', 'downsample_layers.2.norm.weight',
            'stages.1.1.local_mp.bn.weight', 'stages.0.0.cpe.1.proj.weight', 'head.weight'} <= official.keys()


def test_raw_weights_are_the_default_of_a_file_with_both():
    """The released *-best-ema.pth hold `model` and `model_ema`; the official eval loads `model`."""
    model = timm.create_model('l2vit_tiny', **SHORT)
    raw = _to_official(model.state_dict())
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    ckpt = {'model': raw, 'model_ema': ema, 'epoch': 'best-ema'}
    got = fit(ckpt, model)
    assert torch.equal(got['head.fc.weight'], raw['head.weight'])
    assert torch.equal(fit(ckpt, model)['norm.weight'], raw['norm.weight'])
    assert torch.equal(fit(ckpt, model, use_ema=True)['norm.weight'], ema['norm.weight'])


def test_full_official_layout_maps_onto_every_key():
    model = _meta_model('l2vit_base')
    assert fit(_to_official(model.state_dict()), model).keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match=r'l2vit_tiny: .*blocks per stage: checkpoint \[2, 2, 18, 2\] vs model '
                                         r'\[2, 2, 6, 2\]'):
        fit(_to_official(_meta_model('l2vit_small').state_dict()), _meta_model('l2vit_tiny'))
    with pytest.raises(ValueError, match='not a L2ViT checkpoint'):
        fit(_meta_model('ravlt_tiny').state_dict(), _meta_model('l2vit_tiny'))


def test_bad_input():
    model = timm.create_model('l2vit_tiny', **SHORT)
    with pytest.raises(ValueError, match=r'in_chans=3'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='one entry per stage'):
        L2ViT(depths=(2, 2, 2), num_heads=(3, 6, 12, 24))
    with pytest.raises(ValueError, match=r'770.*num_heads'):
        L2ViT(embed_dims=(96, 192, 384, 770))
