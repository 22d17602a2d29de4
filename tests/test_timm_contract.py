"""The timm model contract as timm 1.0.31's own ``tests/test_models.py`` checks it, on the smallest variant of every
zoo family (the registry is walked, so a new family is covered when it registers).

Reproduces that file's checks for forward, backward, default cfgs (factory ``device``/``dtype`` kwargs, unknown
kwargs raise, ``reset_classifier`` keeps the parent's device/dtype, ``group_matcher``/``no_weight_decay`` match the
parameters), forward_features, features_only and forward_intermediates, with its input sizes; torchscript and fx
tracing are not part of the zoo's contract. Structure checks run on the meta device, numerical ones on CPU.
"""
import fnmatch
import inspect
import math

import pytest
import timm
import torch
from _zoo import smallest_per_family
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import FeatureInfo, group_parameters

MODELS = smallest_per_family()
# timm's test_models.py sizes
TARGET_FWD_SIZE, TARGET_BWD_SIZE, TARGET_FFEAT_SIZE = 384, 128, 96

pytestmark = pytest.mark.usefixtures('one_thread')


def _input_size(model: torch.nn.Module, target: int) -> tuple[int, ...]:
    """timm's ``_get_input_size``: the cfg's input size, capped at ``target`` unless the model is fixed-size."""
    cfg = model.pretrained_cfg
    size = cfg['input_size']
    if cfg.get('fixed_input_size'):
        return size
    if cfg.get('min_input_size') and max(size) > target:
        return cfg['min_input_size']
    return tuple(min(x, target) for x in size) if max(size) > target else size


def test_every_family_is_covered():
    assert {'nat_mini', 'dinat_mini', 'dinat_s_tiny', 'maxvit_na_tiny_tf_224'} <= set(MODELS)


@pytest.mark.parametrize('name', MODELS)
def test_factory_kwargs_and_api_contract(name):
    # create_model(device=, dtype=) without a device context puts every tensor there
    model = timm.create_model(name, device='meta', dtype=torch.float32).eval()
    misplaced = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != 'meta']
    assert not misplaced, misplaced[:5]
    with pytest.raises(TypeError):
        timm.create_model(name, device='meta', not_a_model_arg=1)
    param = inspect.signature(model.reset_classifier).parameters.get('global_pool')
    assert param is not None and param.default is None
    names = [n for n, _ in model.named_parameters()]
    groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    assert len(set(groups.values())) > 1
    for pattern in model.no_weight_decay():
        assert any(fnmatch.fnmatch(n, pattern) for n in names), f'no_weight_decay() entry {pattern!r} matches nothing'
    double = timm.create_model(name, device='meta', dtype=torch.float64)
    assert {p.dtype for p in double.parameters()} == {torch.float64}

    # reset_classifier keeps the parent's device/dtype and training mode
    model.to(device='meta', dtype=torch.float64)
    model.reset_classifier(0)
    model.reset_classifier(2)
    head = list(model.get_classifier().parameters())
    assert head and all(p.device.type == 'meta' and p.dtype == torch.float64 for p in head)
    assert all(not m.training for m in model.modules())

    # frozen parameters stay frozen through reset_classifier
    frozen = timm.create_model(name, device='meta', dtype=torch.float32)
    frozen.requires_grad_(False)
    frozen.reset_classifier(0)
    frozen.reset_classifier(0, '')
    assert not [n for n, p in frozen.named_parameters() if p.requires_grad]


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg_shapes(name):
    """timm's test_model_default_cfgs (test_model_default_cfgs_non_std for token models): unpooled features match
    pool_size, heads can be removed both ways."""
    model = timm.create_model(name, device='meta', dtype=torch.float32).eval()
    cfg = model.pretrained_cfg
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    assert model.in_chans == cfg['input_size'][0]
    state_dict = model.state_dict()
    classifiers = cfg['classifier'] if isinstance(cfg['classifier'], (tuple, list)) else (cfg['classifier'],)
    assert all(f'{c}.weight' in state_dict for c in classifiers)
    first_convs = cfg['first_conv'] if isinstance(cfg['first_conv'], (tuple, list)) else (cfg['first_conv'],)
    assert all(f'{c}.weight' in state_dict for c in first_convs)

    fmt = getattr(model, 'output_fmt', 'NCHW')
    x = torch.randn(1, *cfg['input_size'], device='meta')
    features = model.forward_features(x)
    pre_logits = model.forward_head(features, pre_logits=True)
    if fmt == 'NLC':  # token models (DeiT): timm's test_model_default_cfgs_non_std
        assert features.ndim == 3 and features.shape[-1] == model.num_features
        assert pre_logits.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model(x).shape == pre_logits.shape
        headless = timm.create_model(name, num_classes=0, device='meta', dtype=torch.float32).eval()
        assert headless(x).shape == (1, headless.num_features)
        return
    spatial, feat = get_spatial_dim(fmt), get_channel_dim(fmt)
    pool_size = cfg['pool_size']
    assert (features.shape[spatial[0]], features.shape[spatial[1]]) == tuple(pool_size)
    assert features.shape[feat] == model.num_features and pre_logits.shape[1] == model.head_hidden_size
    model.to(torch.bfloat16)
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16
    model.to(torch.float32)

    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == pre_logits.shape
    model.reset_classifier(0, '')
    out = model(x)
    assert out.ndim == 4 and (out.shape[spatial[0]], out.shape[spatial[1]]) == tuple(pool_size)
    headless = timm.create_model(name, num_classes=0, device='meta', dtype=torch.float32).eval()
    assert headless(x).shape == pre_logits.shape
    unpooled = timm.create_model(name, num_classes=0, global_pool='', device='meta', dtype=torch.float32).eval()
    out = unpooled(x)
    assert out.ndim == 4 and (out.shape[spatial[0]], out.shape[spatial[1]]) == tuple(pool_size)


@pytest.mark.parametrize('name', MODELS)
def test_forward_and_grad_checkpointing(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(1, *_input_size(model, TARGET_FWD_SIZE))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, model.num_classes) and not torch.isnan(out).any()
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_backward(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=42).train()
    x = torch.randn(2, *_input_size(model, TARGET_BWD_SIZE))
    out = model(x)
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize('feature_cls', [None, 'getter'])
def test_features_only(name, feature_cls):
    kwargs = {} if feature_cls is None else {'feature_cls': feature_cls}
    model = timm.create_model(name, features_only=True, **kwargs).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    size = _input_size(model, TARGET_FFEAT_SIZE)
    with torch.no_grad():
        outs = model(torch.randn(1, *size))
    fmt = getattr(model, 'output_fmt', 'NCHW')
    spatial, feat = get_spatial_dim(fmt), get_channel_dim(fmt)
    assert len(outs) == len(channels)
    for c, r, o in zip(channels, reductions, outs):
        assert o.shape[feat] == c and o.shape[0] == 1 and not torch.isnan(o).any()
        for axis, s in zip(spatial, size[-2:]):
            assert s / (2 * r) < o.shape[axis] <= math.ceil(s / r) + 1, (r, tuple(o.shape))


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    size = _input_size(model, TARGET_FFEAT_SIZE)
    x = torch.randn(1, *size)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, output_fmt='NCHW')
        assert len(intermediates) == len(info.channels()) >= 3
        for c, r, o in zip(info.channels(), info.reduction(), intermediates):
            assert o.shape[1] == c and o.shape[2] <= math.ceil(size[1] / r) + 1 and not torch.isnan(o).any()
        torch.testing.assert_close(final, model.forward_features(x), rtol=1e-5, atol=1e-8)
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x)[0], final, rtol=1e-4, atol=1e-5)
