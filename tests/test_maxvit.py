"""MaxViT on ops.na2d: parity with timm's maxvit_*_tf_*, any input size, the timm model contract, bad inputs."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import RelPosBiasTf
from timm.models.maxxvit import grid_partition, grid_reverse, window_partition, window_reverse

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import fit
from backbones.maxvit import MaxViTNA, PartitionAttention

SIZES = ('tiny', 'small', 'base', 'large', 'xlarge')
VARIANTS = [f'maxvit_na_{s}_tf_{r}' for s in SIZES for r in (224, 384, 512)]


def _randomize_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics so eval-mode parity exercises them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)


def _partition_oracle(attn: PartitionAttention, x: torch.Tensor) -> torch.Tensor:
    """timm's partition + RelPosBiasTf attention on a zero-padded map with padded keys masked, then cropped."""
    B, H, W, C = x.shape
    p = attn.partition_size
    Hp, Wp = math.ceil(H / p[0]) * p[0], math.ceil(W / p[1]) * p[1]
    qkv = F.pad(attn.qkv(x), (0, 0, 0, Wp - W, 0, Hp - H))
    valid = torch.zeros(B, Hp, Wp, 1)
    valid[:, :H, :W] = 1
    partition, reverse = (grid_partition, grid_reverse) if attn.grid else (window_partition, window_reverse)
    t = partition(torch.cat([qkv, valid], -1), list(p)).reshape(-1, p[0] * p[1], 3 * C + 1)
    q, k, v = t[..., :-1].reshape(t.shape[0], -1, 3, attn.num_heads, attn.dim_head).permute(2, 0, 3, 1, 4)
    rel = RelPosBiasTf(p, attn.num_heads)
    with torch.no_grad():
        rel.relative_position_bias_table.copy_(attn.rpb)
    logits = q @ k.transpose(-1, -2) * attn.dim_head ** -0.5 + rel.get_bias()
    logits = logits.masked_fill(t[:, None, None, :, -1] == 0, float('-inf'))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(-1, p[0], p[1], C)
    out = reverse(out, list(p), (Hp, Wp))[:, :H, :W]
    return attn.proj(out)


@pytest.mark.parametrize('grid', [False, True], ids=['block', 'grid'])
@pytest.mark.parametrize('size', [(8, 12), (9, 14), (3, 10), (4, 4)])
def test_partition_attention_matches_timm_partition(grid, size):
    torch.manual_seed(0)
    attn = PartitionAttention(32, (4, 4), grid=grid, dim_head=16).eval()
    torch.nn.init.normal_(attn.rpb, std=0.5)
    x = torch.randn(2, *size, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _partition_oracle(attn, x), atol=1e-5, rtol=1e-5)


def test_parity_with_timm_tiny_224():
    """timm's maxvit_tiny_tf_224 weights through backbones.checkpoint.fit give timm's logits and intermediates."""
    torch.manual_seed(0)
    ref = timm.create_model('maxvit_tiny_tf_224').eval()
    _randomize_bn(ref)
    model = timm.create_model('maxvit_na_tiny_tf_224').eval()
    model.load_state_dict(fit(ref.state_dict(), model), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref_out, ref_feats = ref.forward_intermediates(x)
        out, feats = model.forward_intermediates(x)
        ref_logits, logits = ref.forward_head(ref_out), model.forward_head(out)
    assert (logits - ref_logits).abs().max().item() <= 1e-4
    for a, b in zip(feats, ref_feats):
        # features grow to ~1e2 with random weights: fp32 rounding, relative 1e-6
        assert (a - b).abs().max().item() <= 1e-4 * max(1., b.abs().max().item())


def test_parity_with_timm_small_lowres():
    """A second variant by construction (maxvit_small_tf widths at 64px, window/grid 2, fewer blocks): same outputs
    and same parameter gradients as timm (relative position bias gradients through the op's backward)."""
    torch.manual_seed(0)
    ref = timm.create_model('maxvit_small_tf_224', img_size=64, depths=(1, 2, 1, 1)).eval()
    _randomize_bn(ref)
    model = timm.create_model('maxvit_na_small_tf_224', img_size=64, depths=(1, 2, 1, 1)).eval()
    assert model.window_size == model.grid_size == (2, 2)
    model.load_state_dict(fit(ref.state_dict(), model))
    x = torch.randn(2, 3, 64, 64)
    out, ref_out = model(x), ref(x)
    assert (out - ref_out).abs().max().item() <= 1e-4
    out.square().sum().backward()
    ref_out.square().sum().backward()
    ref_grads = {n.replace('.attn.rel_pos.relative_position_bias_table', '.attn.rpb'): p.grad
                 for n, p in ref.named_parameters()}
    for name, p in model.named_parameters():
        scale = max(1., ref_grads[name].abs().max().item())
        assert (p.grad - ref_grads[name]).abs().max().item() <= 1e-4 * scale, name


@pytest.mark.parametrize('name', VARIANTS)
def test_variant_construction_and_params(name):
    size, res = name.split('_')[2], int(name.split('_')[-1])
    with torch.device('meta'):
        model = timm.create_model(name)
        ref = timm.create_model(name.replace('maxvit_na_', 'maxvit_'))
    assert model.window_size == model.grid_size == (res // 32, res // 32)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    cfg = model.pretrained_cfg
    assert cfg['input_size'] == (3, res, res) and cfg['interpolation'] == 'bicubic' and not cfg['fixed_input_size']
    timm_cfg = timm.models.get_pretrained_cfg(f"{name.replace('maxvit_na_', 'maxvit_')}.{cfg['tag']}")
    assert cfg['hf_hub_id'] == f"timm/{name.replace('maxvit_na_', 'maxvit_')}.{cfg['tag']}"
    for key in ('mean', 'std', 'crop_pct', 'crop_mode', 'num_classes', 'license'):
        assert cfg[key] == getattr(timm_cfg, key), key
    assert cfg['paper_ids'] == 'arXiv:2204.01697'
    # the variant's own state dict (meta tensors: shapes only) passes its filter; another variant's does not
    assert set(fit(model.state_dict(), model)) == set(model.state_dict())
    if size != 'tiny':
        with torch.device('meta'):
            tiny = timm.create_model(f'maxvit_na_tiny_tf_{res}')
        with pytest.raises(ValueError, match='does not match'):
            fit(tiny.state_dict(), model)


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return timm.create_model('maxvit_na_tiny_tf_224', drop_path_rate=0.1)


@pytest.mark.parametrize('size', [(64, 64), (40, 60)])
def test_forward_backward_any_size(tiny, size):
    """Train-mode forward/backward at sizes whose maps are not multiples of the 7x7 partition (timm asserts)."""
    tiny.train()
    x = torch.randn(2, 3, *size, requires_grad=True)
    out = tiny(x)
    assert out.shape == (2, 1000)
    out.logsumexp(-1).sum().backward()
    rpb = tiny.stages[1].blocks[0].attn_grid.attn.rpb
    assert x.grad.isfinite().all() and rpb.grad is not None and rpb.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_features_and_intermediates(tiny):
    tiny.eval()
    x = torch.randn(1, 3, 40, 60)
    with torch.no_grad():
        final, feats = tiny.forward_intermediates(x)
        torch.testing.assert_close(final, tiny.forward_features(x))
        assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]
        assert [tuple(f.shape[-2:]) for f in feats] == [(20, 30), (10, 15), (5, 8), (3, 4), (2, 2)]
        some = tiny.forward_intermediates(x, indices=[1, 3], stop_early=True, intermediates_only=True)
        assert len(some) == 2 and torch.equal(some[1], feats[3])
        last = tiny.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(last[0], feats[4])
        assert tiny.forward_head(final, pre_logits=True).shape == (1, 512)
    feat_model = timm.create_model('maxvit_na_tiny_tf_224', features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert feat_model.feature_info.channels() == [64, 128, 256, 512]
    assert feat_model.feature_info.reduction() == [4, 8, 16, 32]
    # FeatureListNet flattens `stages` into stages_0 ... stages_3
    feat_model.load_state_dict(
        {k.replace('stages.', 'stages_', 1): v for k, v in tiny.state_dict().items() if not k.startswith('head')})
    with torch.no_grad():
        for a, b in zip(feat_model(x), feats[1:]):
            torch.testing.assert_close(a, b)


def test_grad_checkpointing_and_model_api(tiny):
    tiny.eval()
    x = torch.randn(1, 3, 32, 48, requires_grad=True)
    ref = tiny(x)
    tiny.set_grad_checkpointing(True)
    try:
        out = tiny(x)
        out.sum().backward()
    finally:
        tiny.set_grad_checkpointing(False)
        tiny.zero_grad(set_to_none=True)
    torch.testing.assert_close(out, ref)
    assert x.grad.isfinite().all()
    nwd = tiny.no_weight_decay()
    assert len(nwd) == 2 * 11 and all(n.endswith('attn.rpb') for n in nwd)
    assert tiny.group_matcher()['stem'] == r'^stem'
    model = timm.create_model('maxvit_na_tiny_tf_224', num_classes=0).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512)
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_checkpoint_wrappers_resize_and_pretrained_file(tiny, tmp_path):
    """timm-layout weights load strictly (plain / wrapped, via pretrained=True), and into a 384 model (rpb resized)."""
    sd = {k.replace('.attn.rpb', '.attn.rel_pos.relative_position_bias_table'): v for k, v in tiny.state_dict().items()}
    for wrapped in (sd, {'model': sd}, {'state_dict_ema': sd, 'optimizer': {}}):
        assert fit(wrapped, tiny).keys() == tiny.state_dict().keys()
    path = tmp_path / 'maxvit_tiny_tf_224.pth'
    torch.save(sd, path)
    model = timm.create_model(
        'maxvit_na_tiny_tf_224', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path)))
    name = 'stages.3.blocks.1.attn_grid.attn.rpb'
    torch.testing.assert_close(model.get_parameter(name), tiny.get_parameter(name))
    big = timm.create_model('maxvit_na_tiny_tf_384')
    big.load_state_dict(fit(sd, big))
    assert big.stages[0].blocks[0].attn_block.attn.rpb.shape == (2, 23, 23)


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match='in_chans=3'):
        tiny(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        tiny(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match='img_size >= 32'):
        MaxViTNA(img_size=16)
    resnet = timm.create_model('resnet10t')
    with pytest.raises(ValueError, match='not a MaxViT'):
        fit(resnet.state_dict(), tiny)
    with pytest.raises(ValueError, match='resnet10t: checkpoint does not match the model'):
        fit(tiny.state_dict(), resnet)
    sd = dict(tiny.state_dict())
    sd.pop('stages.3.blocks.1.attn_grid.mlp.fc2.bias')
    with pytest.raises(ValueError, match='1 missing keys'):
        fit(sd, tiny)


def test_fvcore_flops_tiny_224():
    """fvcore FLOPs (attention through the op's handle) within 3% of the paper's 5.6 G (specs/variants.csv)."""
    fvcore = pytest.importorskip('fvcore.nn')
    model = timm.create_model('maxvit_na_tiny_tf_224').eval()
    with torch.no_grad():
        fca = fvcore.FlopCountAnalysis(model, torch.randn(1, 3, 224, 224))
        fca.unsupported_ops_warnings(False)
        flops = fca.total()
    assert fca.by_operator()['neighborhood_attention'] > 0
    assert abs(flops / 5.6e9 - 1) < 0.03
