"""Downstream backbone wrapper, optimizer groups and checkpoint conversion (mmdet/mmseg registries, CPU)."""
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmcv.ops')

import timm  # noqa: E402
from _zoo import zoo_models  # noqa: E402

import downstream  # noqa: E402
from downstream import AttnZooBackbone, AttnZooOptimWrapperConstructor  # noqa: E402

OFFICIAL_KEYS = Path(__file__).parent / 'data' / 'downstream_official_backbone_keys.json'
# One small model per family of the zoo, plus timm test models covering each timm feature wrapper
# (FeatureListNet with flattened stages, FeatureGetterNet, channels-last outputs).
ZOO_MODELS = ['nat_mini', 'dinat_mini', 'dinat_s_tiny', 'maxvit_na_tiny_tf_224']
OFFICIAL_LAYOUT_MODELS = ['nat_mini', 'dinat_mini', 'dinat_s_tiny']
TIMM_MODELS = ['test_resnet', 'test_convnext', 'test_vit', 'test_mambaout', 'nextvit_small']
NEXTVIT = dict(depths=(1, 1, 5, 1))  # Next-ViT's smallest layout (stage 3 repeats its 4 NCB + NTB pattern)


pytestmark = pytest.mark.usefixtures('one_thread')


def _require(name: str) -> None:
    if not timm.is_model(name):
        pytest.skip(f'{name} is not registered')


def test_registered_in_both_registries():
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_CONSTRUCTORS
    from mmseg.registry import MODELS as SEG_MODELS
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG_CONSTRUCTORS

    assert downstream.registered_scopes == ['mmdet', 'mmseg']
    assert DET_MODELS.get('AttnZooBackbone') is SEG_MODELS.get('AttnZooBackbone') is AttnZooBackbone
    assert DET_CONSTRUCTORS.get('AttnZooOptimWrapperConstructor') is AttnZooOptimWrapperConstructor
    assert SEG_CONSTRUCTORS.get('AttnZooOptimWrapperConstructor') is AttnZooOptimWrapperConstructor


@pytest.mark.parametrize('missing', ['mmdet', 'mmseg'])
def test_registration_with_only_one_library(monkeypatch, missing):
    real_import = downstream.importlib.import_module

    def import_module(name):
        if name.split('.')[0] == missing:
            raise ModuleNotFoundError(f'No module named {missing!r}', name=missing)
        return real_import(name)

    monkeypatch.setattr(downstream.importlib, 'import_module', import_module)
    assert downstream._register() == [s for s in ('mmdet', 'mmseg') if s != missing]


def test_registration_explains_a_missing_mmcv(monkeypatch):
    def import_module(name):  # mmdet/mmseg installed, mmcv not (it is not a pip dependency of either)
        raise ModuleNotFoundError("No module named 'mmcv'", name='mmcv')

    monkeypatch.setattr(downstream.importlib, 'import_module', import_module)
    with pytest.raises(ImportError, match='tools/install_mmcv.sh'):
        downstream._register()


@pytest.mark.parametrize('name', ZOO_MODELS + TIMM_MODELS)
@pytest.mark.parametrize('size', [(61, 87), (64, 64), (97, 33)])
def test_feature_shapes_any_input_size(name, size):
    _require(name)
    backbone = AttnZooBackbone(name, out_indices=(0, 1, 2), drop_path_rate=0.1).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, *size))
    assert len(outs) == 3
    for out, channels, stride in zip(outs, backbone.channels, backbone.strides):
        assert out.shape == (2, channels, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert torch.isfinite(out).all()


def test_pad_multiple_for_models_with_size_constraints():
    # timm's MaxViT asserts inputs divisible by window * stride; pad_multiple pads inside and crops back.
    backbone = AttnZooBackbone('test_maxvit', out_indices=(1, 4)).eval()
    with pytest.raises(RuntimeError, match='pad_multiple'):
        backbone(torch.randn(1, 3, 61, 87))
    backbone.pad_multiple = 160
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 61, 87))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 22), (2, 3)]


def test_output_norms_are_per_level_layernorms():
    backbone = AttnZooBackbone('test_resnet', out_indices=(1, 3)).eval()
    assert [n for n, _ in backbone.named_children() if n.startswith('norm')] == ['norm1', 'norm3']
    plain = AttnZooBackbone('test_resnet', out_indices=(1, 3), out_norm=False).eval()
    plain.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith('norm')})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        normed, raw = backbone(x)[0], plain(x)[0]
    expected = nn.functional.layer_norm(raw.permute(0, 2, 3, 1), (raw.shape[1],), eps=1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(normed, expected)


def test_output_norms_can_be_chosen_per_level():
    """LITv2's official backbone normalises every level but the first: out_norm takes one bool per output."""
    backbone = AttnZooBackbone('test_resnet', out_indices=(1, 3), out_norm=(False, True)).eval()
    assert [n for n, _ in backbone.named_children() if n.startswith('norm')] == ['norm3']
    plain = AttnZooBackbone('test_resnet', out_indices=(1, 3), out_norm=False).eval()
    plain.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith('norm')})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], plain(x)[0])
    with pytest.raises(ValueError, match='one of them per output'):
        AttnZooBackbone('test_resnet', out_indices=(1, 3), out_norm=(True,))


def test_bad_arguments_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match='unknown model_name'):
        AttnZooBackbone('nat_tinyy')
    with pytest.raises(ValueError, match='out of range'):
        AttnZooBackbone('test_resnet', out_indices=(0, 1, 7))
    with pytest.raises(ValueError, match='increasing'):
        AttnZooBackbone('test_resnet', out_indices=(2, 1))
    with pytest.raises(ValueError, match='frozen_stages'):
        AttnZooBackbone('test_resnet', frozen_stages=9)
    with pytest.raises(FileNotFoundError, match='init_cfg checkpoint'):
        AttnZooBackbone('test_resnet', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'none.pth')))


@pytest.mark.parametrize('name', ['test_resnet', 'test_convnext', 'test_vit'])
@pytest.mark.parametrize('wrapper', [None, 'state_dict', 'model'])
def test_classification_checkpoint_loads_through_the_filter(tmp_path, name, wrapper):
    source = timm.create_model(name)
    state = source.state_dict()
    path = tmp_path / 'cls.pth'
    torch.save(state if wrapper is None else {wrapper: state, 'epoch': 3}, path)
    backbone = AttnZooBackbone(name, out_indices=(0, 1), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    source_params = dict(source.named_parameters())
    loaded = 0
    for feat_name, param in backbone.model.named_parameters():
        cls_name = next(c for c in (feat_name, feat_name.replace('_', '.', 1), feat_name[6:]) if c in source_params)
        torch.testing.assert_close(param, source_params[cls_name])
        loaded += 1
    assert loaded == len(list(backbone.model.parameters()))


def test_mismatched_classification_checkpoint_raises(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save(timm.create_model('test_convnext').state_dict(), path)
    backbone = AttnZooBackbone('test_resnet', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='does not match'):
        backbone.init_weights()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(path.read_bytes()[:100])
    backbone = AttnZooBackbone('test_resnet', init_cfg=dict(type='Pretrained', checkpoint=str(truncated)))
    with pytest.raises(RuntimeError, match='cannot read checkpoint'):
        backbone.init_weights()


def test_frozen_stages_and_norm_eval():
    # timm's ResNet feature levels: 0 = stem output (act1, stride 2), 1 = layer1, ...
    backbone = AttnZooBackbone('test_resnet', out_indices=(1, 2, 3, 4), frozen_stages=2, norm_eval=True)
    frozen = {n for n, p in backbone.model.named_parameters() if not p.requires_grad}
    assert any(n.startswith('conv1') for n in frozen) and any(n.startswith('layer1.') for n in frozen)
    assert not any(n.startswith(('layer2.', 'layer3.', 'layer4.')) for n in frozen)
    backbone.train()
    assert not backbone.model.layer1.training and backbone.model.layer2.training
    assert all(not m.training for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    outs = backbone(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    params = dict(backbone.model.named_parameters())
    assert all(params[n].grad is None for n in frozen)
    assert all(p.grad is not None for n, p in params.items() if n.startswith('layer2.'))


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    ref = AttnZooBackbone('test_convnext')
    ckpt = AttnZooBackbone('test_convnext', with_cp=True)
    ckpt.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for model in (ref, ckpt):
        sum(o.sum() for o in model(x)).backward()
    for (name, a), b in zip(ref.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


class _Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = AttnZooBackbone('test_vit', out_indices=(1, 3, 5))
        self.neck = nn.Conv2d(64, 8, 1)


def _groups(paramwise_cfg):
    model = _Detector()
    constructor = AttnZooOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)), paramwise_cfg)
    optimizer = constructor(model).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(g['params'][0])]: g for g in optimizer.param_groups}


def test_optimizer_groups_no_decay_and_layer_decay():
    groups = _groups(dict(custom_keys={'norm': dict(decay_mult=0.)}))
    assert groups['backbone.model.model.pos_embed']['weight_decay'] == 0.  # from the model's no_weight_decay()
    assert groups['backbone.norm1.weight']['weight_decay'] == 0.
    assert groups['backbone.model.model.blocks.0.attn.qkv.weight']['weight_decay'] == 0.05
    assert groups['neck.weight']['weight_decay'] == 0.05

    groups = _groups(dict(layer_decay_rate=0.5))
    lr = {n: g['lr'] for n, g in groups.items()}
    assert lr['neck.weight'] == lr['backbone.norm5.weight'] == 1e-3
    assert lr['backbone.model.model.patch_embed.proj.weight'] < lr['backbone.model.model.blocks.0.attn.qkv.weight']
    assert lr['backbone.model.model.blocks.0.attn.qkv.weight'] == 2 * lr['backbone.model.model.patch_embed.proj.weight']
    with pytest.raises(ValueError, match='layer_decay_rate'):
        _groups(dict(layer_decay_rate=1.5))


def test_optimizer_param_rules_like_train_py():
    """train.py's param_rules in paramwise_cfg: over custom_keys and the backbone's no-decay set, under layer decay."""
    rules = {'backbone.*.qkv.weight': dict(lr_mult=0.5, decay_mult=0.), 'backbone.*pos_embed': dict(decay_mult=1.),
             'neck.*': dict(lr_mult=10.)}
    plain = _groups(dict(custom_keys={'norm': dict(decay_mult=0.)}, layer_decay_rate=0.5))
    groups = _groups(dict(custom_keys={'norm': dict(decay_mult=0.)}, layer_decay_rate=0.5, param_rules=rules))
    qkv = 'backbone.model.model.blocks.0.attn.qkv.weight'
    assert groups[qkv]['weight_decay'] == 0. and groups[qkv]['lr'] == pytest.approx(0.5 * plain[qkv]['lr'])
    assert plain[qkv]['lr'] < 1e-3  # layer decay still applies on top of the rule
    pos = 'backbone.model.model.pos_embed'  # no_weight_decay() in the model, decayed by the rule
    assert plain[pos]['weight_decay'] == 0. and groups[pos]['weight_decay'] == 0.05
    assert groups['neck.weight']['lr'] == pytest.approx(1e-2) and groups['neck.weight']['weight_decay'] == 0.05
    others = [n for n in groups if not n.endswith(('qkv.weight', 'pos_embed')) and not n.startswith('neck.')]
    assert others and all(groups[n]['lr'] == plain[n]['lr'] and groups[n]['weight_decay'] == plain[n]['weight_decay']
                          for n in others)
    with pytest.raises(ValueError, match="'backbone.*.conv_offset.weight' match no trainable parameter"):
        _groups(dict(param_rules={'backbone.*.conv_offset.weight': dict(lr_mult=0.01)}))


@pytest.mark.parametrize('name', OFFICIAL_LAYOUT_MODELS)
def test_official_detection_backbone_loads_strictly(name):
    """Key names and shapes of the official detection backbones (recorded from the official code) load strictly."""
    _require(name)
    spec = json.loads(OFFICIAL_KEYS.read_text())[name]['keys']
    torch.manual_seed(0)
    official = {k: torch.randn(shape) for k, shape in spec.items()}
    detector = nn.Module()
    detector.backbone = AttnZooBackbone(name)
    detector.load_state_dict({f'backbone.{k}': v for k, v in official.items()}, strict=True)
    ours = detector.backbone.state_dict()
    for level in range(4):
        torch.testing.assert_close(ours[f'norm{level}.weight'], official[f'norm{level}.weight'])
    # Every official tensor landed exactly where the official layout says (written out here, not taken from the code).
    assert len(ours) == len(official)
    for key, value in official.items():
        torch.testing.assert_close(ours[_ours_from_official(key, features_model=True)], value, msg=key)
    del official[next(k for k in official if 'qkv.weight' in k)]
    with pytest.raises(ValueError, match='does not match'):
        detector.load_state_dict({f'backbone.{k}': v for k, v in official.items()}, strict=True)


@pytest.mark.parametrize('name', OFFICIAL_LAYOUT_MODELS)
def test_official_classification_checkpoint_as_pretrained(tmp_path, name):
    """An official ImageNet-22k checkpoint layout (``model`` wrapper, 21841-class head) through init_cfg."""
    _require(name)
    spec = json.loads(OFFICIAL_KEYS.read_text())[name]['keys']
    width = spec['norm3.weight'][0]
    shapes = {k: s for k, s in spec.items() if not k.startswith('norm')}
    shapes.update({'norm.weight': [width], 'norm.bias': [width], 'head.weight': [21841, width], 'head.bias': [21841]})
    torch.manual_seed(0)
    official = {k: torch.randn(s) for k, s in shapes.items()}
    torch.save({'model': official}, tmp_path / 'in22k.pth')
    init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'in22k.pth'))
    backbone = AttnZooBackbone(name, out_indices=(1, 2), init_cfg=init_cfg)
    backbone.init_weights()
    # Every weight of the feature model comes from its official key (levels 0-2 only: out_indices=(1, 2)).
    ours = backbone.model.state_dict()
    mapped = {_ours_from_official(k)[len('model.'):]: k for k in official if not k.startswith(('norm.', 'head.'))}
    assert set(ours) <= set(mapped)
    for key, value in ours.items():
        torch.testing.assert_close(value, official[mapped[key]], msg=key)


def _ours_from_official(key: str, features_model: bool = False) -> str:
    """Official NAT/DiNAT/DiNAT_s backbone key -> ours inside AttnZooBackbone (``model.stages_i...``, ``norm{i}``).

    Official levels downsample at their end, ours at the start of the next stage; ``gamma1/2`` are timm's
    ``ls1/2.gamma``. The per-level output norms keep their names.
    """
    if re.match(r'^norm\d', key):
        return key
    m = re.match(r'^(?:levels|layers)\.(\d+)\.downsample\.(.*)$', key)
    if m:
        key = f'stages_{int(m.group(1)) + 1}.downsample.{m.group(2)}'
    else:
        key = re.sub(r'^(?:levels|layers)\.(\d+)\.', r'stages_\1.', key)
    key = re.sub(r'\.gamma([12])$', r'.ls\1.gamma', key)
    return 'model.' + key


@pytest.mark.parametrize('name', zoo_models())
def test_default_out_indices_are_the_last_four_levels(name):
    """Every zoo model, present and future: the default outputs are strides 4/8/16/32 (MaxViT's level 0 is its stem);
    isotropic models (DeiT: one stride-16 token map) give their last four blocks."""
    with torch.device('meta'):
        backbone = AttnZooBackbone(name)
    isotropic = len({info['reduction'] for info in backbone.model.feature_info.info}) == 1
    assert backbone.strides == ([16] * 4 if isotropic else [4, 8, 16, 32])
    assert isotropic == name.startswith(('agent_deit', 'inline_deit'))
    assert backbone.out_indices == tuple(range(backbone.num_levels - 4, backbone.num_levels))


def test_classification_model_is_meta_and_built_once(monkeypatch, tmp_path):
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, 'create_model', lambda *a, **k: calls.append(k.get('features_only')) or real(*a, **k))
    source = timm.create_model('nat_mini', depths=(1, 1, 1, 1))
    torch.save({'model': source.state_dict()}, tmp_path / 'cls.pth')
    calls.clear()
    backbone = AttnZooBackbone('nat_mini', model_kwargs=dict(depths=(1, 1, 1, 1)),
                               init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'cls.pth')))
    backbone.init_weights()
    backbone.param_group_info(layer_decay=True)
    assert calls.count(True) == 1 and calls.count(None) == 1  # the feature model, one (meta) classification model
    assert {p.device.type for p in backbone.classification_model().parameters()} == {'meta'}
    assert 'classification_model' not in dict(backbone.named_children())
    torch.testing.assert_close(backbone.model.stages_2.blocks[0].attn.qkv.weight,
                               source.stages[2].blocks[0].attn.qkv.weight)


def test_use_ema_chooses_the_weights(tmp_path):
    torch.manual_seed(0)
    raw = timm.create_model('test_resnet').state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    torch.save({'state_dict': raw, 'state_dict_ema': ema}, tmp_path / 'both.pth')
    for use_ema, expected in ((None, ema), (True, ema), (False, raw)):  # test_resnet declares nothing: EMA first
        backbone = AttnZooBackbone('test_resnet', out_indices=(1,), use_ema=use_ema,
                                   init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'both.pth')))
        backbone.init_weights()
        got = backbone.model.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in got if k in expected) and 'conv1.0.weight' in got


class _GetattrGadget:
    """Pickles as getattr(HistoryBuffer, '__init__'): what a hostile checkpoint would use to reach arbitrary code."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        return getattr, (HistoryBuffer, '__init__')


def test_safe_globals_allow_mmengine_state_but_not_general_getattr(tmp_path):
    from mmengine.logging import HistoryBuffer

    from downstream import mmengine_safe_globals

    buffer = HistoryBuffer()
    buffer.update(np.float64(2.5))
    torch.save({'message_hub': {'loss': buffer}, 'meta': {'epoch': np.int64(3)}}, tmp_path / 'ok.pth')
    before = torch.serialization.get_safe_globals()
    with mmengine_safe_globals():
        with mmengine_safe_globals():  # nested, as init_weights inside runner.train(): must not strip the outer list
            pass
        loaded = torch.load(tmp_path / 'ok.pth', weights_only=True)
    assert loaded['message_hub']['loss'].current() == 2.5
    assert set(torch.serialization.get_safe_globals()) == set(before)  # torch keeps no order across the context
    torch.save({'evil': _GetattrGadget()}, tmp_path / 'evil.pth')
    with mmengine_safe_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'evil.pth', weights_only=True)


def _perturbed_nextvit() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model('nextvit_small', **NEXTVIT).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # norm affines and biases off their init (timm's weight init keeps activations O(1))
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.normal_(0, 0.1)
            elif name.endswith('running_var'):
                b.uniform_(0.5, 1.5)
    return model


def test_batchnorm_output_norms_and_the_models_final_norm():
    """Next-ViT's official segmentation backbone: fresh BatchNorms on levels 0-2, the classification model's own
    (pretrained) final norm on level 3 (final_norm: timm's forward_intermediates(norm=True))."""
    cls = _perturbed_nextvit()
    backbone = AttnZooBackbone('nextvit_small', model_kwargs=NEXTVIT, out_norm=('bn', 'bn', 'bn', False),
                               final_norm=True, pad_multiple=1).eval()  # any size: no padding, as officially
    backbone.model.load_state_dict(backbone.convert_classification_state_dict(cls.state_dict()), strict=True)
    assert [n for n, _ in backbone.named_children() if n.startswith('norm')] == ['norm0', 'norm1', 'norm2']
    with torch.no_grad():
        for i in range(3):
            norm = getattr(backbone, f'norm{i}')
            assert isinstance(norm, nn.BatchNorm2d) and norm.eps == 1e-5
            norm.running_mean.normal_(0, 0.1)
        x = torch.randn(1, 3, 61, 87)
        outs = backbone(x)
        feats = cls.forward_intermediates(x, intermediates_only=True)
    for i in range(3):
        torch.testing.assert_close(outs[i], getattr(backbone, f'norm{i}')(feats[i]))
    torch.testing.assert_close(outs[3], cls.norm(feats[3]))
    with pytest.raises(ValueError, match='out_norm must be one of'):
        AttnZooBackbone('test_resnet', out_indices=(1, 3), out_norm=('gn', True))


def test_norm_cfg_sync_bn_converts_every_batchnorm():
    with torch.device('meta'):
        plain = AttnZooBackbone('nextvit_small', model_kwargs=NEXTVIT, out_norm='bn')
        synced = AttnZooBackbone('nextvit_small', model_kwargs=NEXTVIT, out_norm='bn', norm_cfg=dict(type='SyncBN'))
        kept = AttnZooBackbone('nextvit_small', model_kwargs=NEXTVIT, out_norm='bn', norm_cfg=dict(type='BN'))
    batchnorms = [m for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]  # 1-D ones too
    assert len(batchnorms) > 4 and sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == len(batchnorms)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in kept.modules())
    assert synced.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(ValueError, match="norm_cfg type must be 'BN'"):
        AttnZooBackbone('test_resnet', norm_cfg=dict(type='GN'))


def test_reparameterize_merges_nextvit_batchnorms_for_inference():
    cls = _perturbed_nextvit()
    backbone = AttnZooBackbone('nextvit_small', model_kwargs=NEXTVIT, out_norm=False)
    backbone.model.load_state_dict(backbone.convert_classification_state_dict(cls.state_dict()), strict=True)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        before = backbone.eval()(x)
        norms = len([k for k in backbone.state_dict() if k.endswith('running_var')])
        after = backbone.reparameterize()(x)
    assert len([k for k in backbone.state_dict() if k.endswith('running_var')]) < norms and not backbone.training
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match='nothing to reparameterize'):
        AttnZooBackbone('test_vit', out_indices=(1,)).reparameterize()


def test_hf_hub_checkpoints(monkeypatch):
    from backbones.checkpoint import read_checkpoint
    from downstream import checkpoint as ds_checkpoint

    state = timm.create_model('test_resnet').state_dict()
    asked = []
    monkeypatch.setattr(timm.models, 'load_state_dict_from_hf', lambda repo: asked.append(repo) or dict(state))
    ds_checkpoint.check_checkpoint_path('hf-hub:timm/test_resnet.r160_in1k')  # not a local file: checked on download
    got = read_checkpoint('hf-hub:timm/test_resnet.r160_in1k')
    assert asked == ['timm/test_resnet.r160_in1k'] and got.keys() == state.keys()
    monkeypatch.setattr(timm.models, 'load_state_dict_from_hf', lambda repo: (_ for _ in ()).throw(OSError('offline')))
    with pytest.raises(RuntimeError, match='cannot read checkpoint hf-hub:timm/x.*offline'):
        read_checkpoint('hf-hub:timm/x')
