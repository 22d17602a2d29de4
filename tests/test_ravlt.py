"""RAVLT: the frozen official-parity fixture, parameter counts, the timm contract on ravlt_tiny at low resolution,
any input size, official checkpoint mapping (RoPE buffer, conv classifier), bad input."""
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
from backbones.ravlt import RAVLT

FIXTURE = Path(__file__).parent / 'data' / 'ravlt_official.pt'
PARAMS = dict(ravlt_tiny=14_897_768, ravlt_small=25_591_208, ravlt_base=48_241_288, ravlt_large=95_242_440)
SHORT = dict(depths=(1, 1, 1, 1), drop_path_rate=0.)  # ravlt_tiny's widths and heads, one block per stage


def _meta_model(name: str, **kwargs) -> RAVLT:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


def _to_official(state_dict: dict) -> dict:
    """Our layout -> the official one, to build official-layout inputs: the layout's rename table inverted, the
    classifier as the official 1x1 conv."""
    out = RAVLT.checkpoint_layout.to_official(state_dict)
    if 'head.weight' in out:
        out['head.weight'] = out['head.weight'][..., None, None]
    return out


def test_official_parity_fixture():
    """Written by tools/ravlt_official_parity.py from the official RALA.py (perturbed weights, fp32 logits)."""
    fixture = torch.load(FIXTURE, weights_only=True)
    model = RAVLT(**fixture['cfg'], drop_path_rate=0.).eval()
    state = {k: v.float() if v.is_floating_point() else v for k, v in fixture['state_dict'].items()}
    assert 'layers.1.RoPE.angle' in state and state['head.weight'].dim() == 4  # the official layout
    model.load_state_dict(fit({'model': state}, model), strict=True)
    with torch.no_grad():
        for (h, w), logits in fixture['logits'].items():  # 50x71: odd, non-square (RoPE tables rebuilt)
            torch.testing.assert_close(model(fixture_input(h, w)), logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize('name', list(PARAMS))
def test_variant_params_and_cfg(name):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    cfg = model.pretrained_cfg
    assert cfg['url'].startswith('https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_')
    assert cfg['input_size'] == (3, 224, 224) and cfg['paper_ids'] == 'arXiv:2411.07635'
    assert isinstance(model.get_submodule(cfg['first_conv']), torch.nn.Conv2d)
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]
    assert [s.blocks[0].attn.linear for s in model.stages] == [True, True, False, False]
    assert sorted(timm.list_models('ravlt_*')) == sorted(PARAMS)


def test_layer_scale_init_per_variant():
    def inits(name):
        return [s.blocks[0].gamma_1[0, 0].item() for s in timm.create_model(name, depths=(1,) * 4).stages]
    assert inits('ravlt_tiny') == [1.0] * 4
    assert inits('ravlt_base') == pytest.approx([1.0, 1.0, 1e-6, 1e-6])
    assert inits('ravlt_large') == pytest.approx([1e-6] * 4)


def test_tiny_forward_backward_features_intermediates():
    torch.manual_seed(0)
    model = timm.create_model('ravlt_tiny', drop_path_rate=0.)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad

    model.eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(model.forward_head(final), model(x))
        nhwc = model.forward_intermediates(x, indices=[0], output_fmt='NHWC', intermediates_only=True)
    assert torch.equal(nhwc[0], inter[0].permute(0, 2, 3, 1))
    assert [tuple(f.shape[1:]) for f in inter] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert final.shape == (2, 1024, 2, 2)

    features = timm.create_model('ravlt_tiny', features_only=True, out_indices=(1, 3))
    features.load_state_dict({re.sub(r'^stages\.(\d+)', r'stages_\1', k): v for k, v in model.state_dict().items()
                              if not k.startswith(('proj.', 'norm.', 'head.'))})
    features.eval()
    with torch.no_grad():
        for got, i in zip(features(x), (1, 3)):
            torch.testing.assert_close(got, inter[i])

    kept = model.prune_intermediate_layers(indices=[1])
    assert kept == [1] and len(model.stages) == 2 and model.num_features == 128
    with torch.no_grad():
        assert model(x).shape == (2, 128, 8, 8)


@pytest.mark.parametrize('size', [(33, 47), (97, 40)])
def test_any_input_size(size):
    model = timm.create_model('ravlt_tiny', **SHORT).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    hw, expect = [(n + 1) // 2 for n in size], []
    for _ in range(4):  # stride-2 3x3 convs with padding 1 halve with ceil: twice in the stem, once per stage
        hw = [(n + 1) // 2 for n in hw]
        expect.append(tuple(hw))
    assert [tuple(f.shape[2:]) for f in feats] == expect


def test_grad_checkpointing_classifier_and_optimizer_groups():
    torch.manual_seed(0)
    model = timm.create_model('ravlt_tiny', **SHORT)
    x = torch.randn(2, 3, 32, 32)
    assert_grad_checkpointing_matches(model, x)
    model.reset_classifier(10)
    assert model(x).shape == (2, 10)
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    assert len({g['lr_scale'] for g in opt.param_groups}) > 3


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_official_layout_loads_strictly_and_round_trips(wrap):
    official = assert_official_round_trip('ravlt_tiny', SHORT, _to_official, fit, wrap)
    assert {'layers.0.RoPE.angle', 'layers.2.downsample.reduction.weight',
            'layers.0.blocks.0.norm1.norm.weight'} <= official.keys()


def test_full_official_layout_maps_onto_every_key():
    model = _meta_model('ravlt_large')
    assert fit(_to_official(model.state_dict()), model).keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match=r'ravlt_tiny: .*blocks per stage: checkpoint \[3, 5, 9, 3\] vs model '
                                         r'\[2, 2, 6, 2\]'):
        fit(_to_official(_meta_model('ravlt_small').state_dict()), _meta_model('ravlt_tiny'))
    with pytest.raises(ValueError, match='not a RAVLT checkpoint'):
        fit(_meta_model('litv2_small').state_dict(), _meta_model('ravlt_tiny'))


def test_bad_input():
    model = timm.create_model('ravlt_tiny', **SHORT)
    with pytest.raises(ValueError, match=r'in_chans=3'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='one entry per stage'):
        RAVLT(depths=(1, 1, 1), num_heads=(1, 2, 4, 8))
    with pytest.raises(ValueError, match='divisible by 4'):
        RAVLT(embed_dims=(6, 12, 24, 48))
