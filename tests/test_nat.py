"""NAT / DiNAT / DiNAT_s: registry, timm contract, official checkpoint conversion, bad input."""
import json
import math
import re
from pathlib import Path

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import fit
from backbones.nat import NAT

OFFICIAL = json.loads((Path(__file__).parent / 'data' / 'nat_official_layouts.json').read_text())
NAMES = [
    'nat_mini', 'nat_tiny', 'nat_small', 'nat_base',
    'dinat_mini', 'dinat_tiny', 'dinat_small', 'dinat_base', 'dinat_large', 'dinat_large_384', 'dinat_large_384_11x11',
    'dinat_s_tiny', 'dinat_s_small', 'dinat_s_base', 'dinat_s_large', 'dinat_s_large_384',
]
SMALLEST = ['nat_mini', 'dinat_mini', 'dinat_s_tiny']
SHORT = (1, 1, 1, 1)  # cheap stand-ins for contract tests: real variants with one block per stage


def _meta_model(name: str, **kwargs) -> NAT:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


def _official_state_dict(variant: str, keep_blocks: int | None = None, gen: torch.Generator | None = None) -> dict:
    """Random tensors in the recorded official layout; ``keep_blocks`` keeps only the first n blocks per stage."""
    gen = gen or torch.Generator().manual_seed(0)
    out = {}
    for key, shape in OFFICIAL['layouts'][variant].items():
        m = re.search(r'\.blocks\.(\d+)\.', key)
        if keep_blocks is not None and m and int(m.group(1)) >= keep_blocks:
            continue
        out[key] = torch.randn(shape, generator=gen) * 0.02
    return out


def _short(name: str, **kwargs) -> NAT:
    cfg = dict(depths=SHORT)
    if name.startswith('dinat'):
        cfg['dilations'] = ((1,), (1,), (1,), (1,))
    return timm.create_model(name, **cfg, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# registry, parameter counts, configs (every variant, on the meta device)


def test_registry_names_do_not_shadow_timm():
    assert sorted(n for n in timm.list_models(['nat_*', 'dinat_*'])) == sorted(NAMES)
    for name in NAMES:
        assert timm.models.get_pretrained_cfg(name) is not None, name
    assert 'dinat_large.in22k_ft_in1k' in timm.list_pretrained('dinat_large*')


@pytest.mark.parametrize('name', NAMES)
def test_variant_params_cfg_and_meta_forward(name):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL['params'][name]
    cfg = model.pretrained_cfg
    assert cfg['url'].startswith('https://shi-labs.com/projects/') and cfg['url'].endswith('.pth')
    assert cfg['license'] == 'mit' and cfg['paper_ids'].startswith('arXiv:2') and 'SHI-Labs' in cfg['origin_url']
    assert cfg['interpolation'] == 'bicubic' and len(cfg['mean']) == len(cfg['std']) == 3
    res = cfg['input_size'][-1]
    assert res == (384 if '384' in name else 224)
    assert cfg['crop_pct'] == (1.0 if res == 384 else 0.875) and cfg['pool_size'] == (res // 32,) * 2
    first = model.get_submodule(cfg['first_conv'])
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 3
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    width = model.feature_info[0]['num_chs']
    assert [f['num_chs'] for f in model.feature_info] == [width * 2 ** i for i in range(4)]
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]
    assert len(model.no_weight_decay()) == sum(len(s.blocks) for s in model.stages)
    # shape-level forward of the whole network (ops' fake kernels) at the native size and an odd one
    with torch.device('meta'):
        assert model(torch.empty(2, 3, res, res)).shape == (2, 1000)
        feats = model.forward_intermediates(torch.empty(1, 3, 100, 76), intermediates_only=True)
    assert [tuple(f.shape[2:]) for f in feats] == [(math.ceil(100 / r), math.ceil(76 / r)) for r in (4, 8, 16, 32)]


@pytest.mark.parametrize('name, kernel, dilations', [
    ('dinat_tiny', 7, [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5]),
    ('dinat_large_384', 7, [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1] * 5]),
    ('dinat_large_384_11x11', 11, [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5]),
    ('dinat_s_large_384', 7, [[1, 13], [1, 6], [1, 3] * 9, [1, 1]]),
    ('nat_tiny', 7, [[1] * 3, [1] * 4, [1] * 18, [1] * 5]),
])
def test_published_dilation_schedules(name, kernel, dilations):
    model = _meta_model(name)
    got = [[blk.attn.dilation[0] for blk in stage.blocks] for stage in model.stages]
    assert got == dilations
    assert {blk.attn.kernel_size for stage in model.stages for blk in stage.blocks} == {(kernel, kernel)}


def test_layer_scale_and_drop_path_as_published():
    def has_ls(name):
        return any(n.endswith('ls1.gamma') for n, _ in _meta_model(name).named_parameters())
    assert has_ls('nat_small') and has_ls('nat_base') and has_ls('dinat_base')
    assert not has_ls('nat_tiny') and not has_ls('dinat_small') and not has_ls('dinat_large')
    assert not has_ls('dinat_s_base')
    model = _meta_model('nat_base')
    rates = [blk.drop_path1.drop_prob for stage in model.stages for blk in stage.blocks if hasattr(blk.drop_path1,
                                                                                                  'drop_prob')]
    assert rates == pytest.approx(torch.linspace(0, 0.5, 30)[1:].tolist())
    assert model.stages[0].blocks[0].ls1.gamma.shape == (128,)


# ----------------------------------------------------------------------------------------------------------------
# the smallest real variants: forward, backward, features_only, intermediates


@pytest.mark.parametrize('name', SMALLEST)
def test_smallest_forward_backward_features(name):
    torch.manual_seed(0)
    model = timm.create_model(name, drop_path_rate=0.)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    assert model.stages[0].blocks[0].attn.rpb.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-5)
        assert torch.allclose(model.forward_head(final), model(x), atol=1e-5)
    for f, info in zip(inter, model.feature_info):
        assert f.shape == (2, info['num_chs'], 64 // info['reduction'], 64 // info['reduction'])
    assert model.forward_head(final, pre_logits=True).shape == (2, model.num_features)

    features = timm.create_model(name, features_only=True, out_indices=(1, 3))
    features.load_state_dict({re.sub(r'^stages\.(\d+)', r'stages_\1', k): v for k, v in model.state_dict().items()
                              if not k.startswith(('norm.', 'head.'))})
    features.eval()
    assert features.feature_info.channels() == [model.feature_info[i]['num_chs'] for i in (1, 3)]
    assert features.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        got = features(x)
    assert [tuple(g.shape) for g in got] == [tuple(inter[i].shape) for i in (1, 3)]
    for g, i in zip(got, (1, 3)):
        torch.testing.assert_close(g, inter[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name, size', [('nat_mini', (33, 47)), ('dinat_mini', (95, 30)), ('dinat_s_tiny', (50, 71)),
                                        ('dinat_s_tiny', (1, 1))])
def test_any_input_size(name, size):
    model = _short(name).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
        assert model(torch.randn(1, 3, *size)).shape == (1, 1000)
    assert [tuple(f.shape[2:]) for f in feats] == [tuple(math.ceil(s / r) for s in size) for r in (4, 8, 16, 32)]


def test_forward_intermediates_options_and_prune():
    torch.manual_seed(0)
    model = _short('dinat_s_tiny').eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
        nhwc = model.forward_intermediates(x, indices=[0], output_fmt='NHWC', intermediates_only=True)
    assert len(inter) == 4 and all(f.is_contiguous() for f in inter)
    assert all(torch.equal(a, b) for a, b in zip(last2, inter[2:]))
    assert torch.equal(early[0], inter[1])
    assert torch.allclose(normed[0], final)
    assert torch.equal(nhwc[0], inter[0].permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NLC')

    kept = model.prune_intermediate_layers(indices=[1])
    assert kept == [1] and len(model.stages) == 2 and model.num_features == 192
    with torch.no_grad():
        assert torch.equal(model.forward_intermediates(x, intermediates_only=True)[1], inter[1])
        assert model(x).shape == (1, 192, 8, 8)  # headless: unpooled features, as timm's pruned models


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    model = _short('dinat_mini', drop_path_rate=0.)
    x = torch.randn(1, 3, 32, 32)
    ref = model(x)
    ref.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in model.stages)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)


def test_classifier_optimizer_groups_and_drop_path():
    model = _short('nat_small', drop_path_rate=0.5)
    model.reset_classifier(10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)
    # drop path is active in training: two passes differ, eval passes agree
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))

    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    no_decay = {id(p) for g in opt.param_groups if g['weight_decay'] == 0 for p in g['params']}
    rpbs = [p for n, p in model.named_parameters() if n.endswith('.rpb')]
    assert rpbs and all(id(p) in no_decay for p in rpbs)
    assert len({g['lr_scale'] for g in opt.param_groups}) > 3  # group_matcher gives per-block layer decay


# ----------------------------------------------------------------------------------------------------------------
# official checkpoints


@pytest.mark.parametrize('wrap', ['plain', 'model', 'model_ema', 'state_dict', 'module'])
def test_official_checkpoint_loads_strictly_and_round_trips(wrap):
    official = _official_state_dict('nat_mini', keep_blocks=1)
    ckpt = {'plain': official, 'model': {'model': official, 'epoch': 3}, 'model_ema': {'model_ema': official},
            'state_dict': {'state_dict': official},
            'module': {'model': {'module.' + k: v for k, v in official.items()}}}[wrap]
    model = _short('nat_mini')
    model.load_state_dict(fit(ckpt, model), strict=True)
    ours = model.state_dict()
    assert torch.equal(ours['stages.1.downsample.reduction.weight'], official['levels.0.downsample.reduction.weight'])
    assert torch.equal(ours['stages.3.blocks.0.attn.rpb'], official['levels.3.blocks.0.attn.rpb'])
    assert torch.equal(ours['patch_embed.proj.0.weight'], official['patch_embed.proj.0.weight'])
    assert torch.equal(ours['head.fc.weight'], official['head.weight'])
    assert len(ours) == len(official)
    again = fit(ours, model)  # our own layout passes through unchanged
    assert again.keys() == ours.keys() and all(torch.equal(again[k], ours[k]) for k in ours)
    headless = _short('nat_mini', num_classes=0)
    headless.load_state_dict(fit(ckpt, headless), strict=True)


@pytest.mark.parametrize('variant', ['nat_mini', 'nat_small', 'dinat_s_tiny', 'dinat_large_384_11x11'])
def test_official_layouts_map_onto_every_key(variant):
    official = {k: torch.empty(s, device='meta') for k, s in OFFICIAL['layouts'][variant].items()}
    model = _meta_model(variant)
    converted = fit(official, model)
    assert converted.keys() == model.state_dict().keys()
    model.load_state_dict(converted, strict=True)
    if variant == 'nat_small':  # same layout without layer scale is DiNAT-S
        no_ls = {k: v for k, v in official.items() if '.gamma' not in k}
        fit(no_ls, _meta_model('dinat_small'))


def test_official_checkpoint_through_timm_pretrained(tmp_path):
    official = _official_state_dict('dinat_s_tiny', keep_blocks=1)
    path = tmp_path / 'dinat_s_tiny_official.pth'
    torch.save({'model': official}, path)
    overlay = dict(file=str(path))
    kwargs = dict(depths=SHORT, dilations=((1,), (1,), (1,), (1,)), pretrained=True, pretrained_cfg_overlay=overlay)
    model = timm.create_model('dinat_s_tiny', **kwargs)
    assert torch.equal(model.stages[2].downsample.reduction.weight, official['layers.1.downsample.reduction.weight'])
    # timm adapts the classifier and the first conv after our filter
    model = timm.create_model('dinat_s_tiny', num_classes=7, in_chans=1, **kwargs)
    assert model.get_classifier().out_features == 7 and model.patch_embed.proj.weight.shape[1] == 1
    assert torch.equal(model.stages[1].blocks[0].attn.qkv.weight, official['layers.1.blocks.0.attn.qkv.weight'])
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 7)


def test_rpb_resized_bicubic_for_another_kernel():
    layout = OFFICIAL['layouts']['dinat_large_384_11x11']
    official = {k: torch.empty([s[0], 13, 13] if k.endswith('.rpb') else s, device='meta') for k, s in layout.items()}
    model = _meta_model('dinat_large_384_11x11')
    converted = fit(official, model)
    assert converted['stages.0.blocks.0.attn.rpb'].shape == (6, 21, 21)
    model.load_state_dict(converted, strict=True)
    # values: a table that is constant per head stays constant
    small = _short('dinat_mini')
    sd = small.state_dict()
    big = _short('dinat_mini', kernel_size=9)
    sd['stages.0.blocks.0.attn.rpb'] = torch.arange(2.).view(2, 1, 1).expand(2, 13, 13).clone()
    out = fit(sd, big)['stages.0.blocks.0.attn.rpb']
    assert out.shape == (2, 17, 17) and torch.allclose(out, torch.arange(2.).view(2, 1, 1).expand(2, 17, 17))


# ----------------------------------------------------------------------------------------------------------------
# bad input


def test_wrong_family_or_variant_checkpoint_is_named():
    nat_layout = {k: torch.empty(s, device='meta') for k, s in OFFICIAL['layouts']['nat_mini'].items()}
    dinat_s_layout = {k: torch.empty(s, device='meta') for k, s in OFFICIAL['layouts']['dinat_s_tiny'].items()}
    small_layout = {k: torch.empty(s, device='meta') for k, s in OFFICIAL['layouts']['nat_small'].items()}
    with pytest.raises(ValueError, match=r'dinat_s_tiny: .*stem: checkpoint conv tokenizer \(NAT/DiNAT\) vs model 4x4 '
                                         r'patches \(DiNAT_s\)'):
        fit(nat_layout, _meta_model('dinat_s_tiny'))
    with pytest.raises(ValueError, match=r'stem: checkpoint 4x4 patches \(DiNAT_s\) vs model conv tokenizer'):
        fit(dinat_s_layout, _meta_model('nat_tiny'))
    with pytest.raises(ValueError, match=r'nat_tiny: .*blocks per stage: checkpoint \[3, 4, 6, 5\] vs model '
                                         r'\[3, 4, 18, 5\]'):
        fit(nat_layout, _meta_model('nat_tiny'))
    with pytest.raises(ValueError, match=r'layer scale: checkpoint True vs model False'):
        fit(small_layout, _meta_model('dinat_small'))
    with pytest.raises(ValueError, match=r'stage widths: checkpoint \[96, 192, 384, 768\] vs model '
                                         r'\[128, 256, 512, 1024\]'):
        fit(small_layout, _meta_model('nat_base'))
    with pytest.raises(ValueError, match='not a NAT/DiNAT/DiNAT_s checkpoint'):
        fit({'blocks.0.weight': torch.zeros(1)}, _meta_model('nat_mini'))
    with pytest.raises(ValueError, match="'epoch' is a int, not a tensor"):
        fit({'epoch': 3, **nat_layout}, _meta_model('nat_mini'))


@pytest.mark.parametrize('features_only', [False, True])
def test_bad_image_input(features_only):
    model = _short('nat_mini', features_only=features_only)
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\] \(in_chans=3\), got a tensor of shape \(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        model(torch.randn(3, 32, 32))


def test_bad_config():
    with pytest.raises(ValueError, match='one dilation per block'):
        timm.create_model('dinat_mini', depths=SHORT)
    with pytest.raises(ValueError, match='stem_type'):
        NAT(stem_type='vit')
    with pytest.raises(ValueError, match='downsample'):
        NAT(depths=SHORT, downsample_type='pool')


@pytest.mark.parametrize('name, gflops', [('nat_mini', 2.7), ('dinat_s_tiny', 4.5)])
def test_fvcore_flops_match_paper(name, gflops):
    fvcore = pytest.importorskip('fvcore.nn')
    model = _meta_model(name).to_empty(device='cpu').eval()  # FLOPs need shapes only: uninitialised weights
    analysis = fvcore.FlopCountAnalysis(model, torch.randn(1, 3, 224, 224))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert analysis.by_operator()['neighborhood_attention'] > 0  # ops' handle counts the attention itself
    assert analysis.total() / 1e9 == pytest.approx(gflops, rel=0.03)
