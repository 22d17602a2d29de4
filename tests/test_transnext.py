"""TransNeXt: aggregated and full attention against direct references of the official formulas (any size, forward
and gradients), the frozen official-parity fixture, parameter counts, run-time tables, any input size, gradient
checkpointing and the official checkpoint mapping."""
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from _parity import fixture_input
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import fit
from backbones.transnext import AggregatedAttention, Attention, TransNeXt
from ops import relative_position_cpb
from ops import transnext_stage_tables as stage_tables
from ops.dense.cpb import _stage_tables

FIXTURE = Path(__file__).parent / 'data' / 'transnext_official.pt'
PARAMS = dict(transnext_micro=12_809_304, transnext_tiny=28_258_960, transnext_small=49_741_564,
              transnext_base=89_721_496, transnext_small_384=49_741_564, transnext_base_384=89_721_496,
              transnext_micro_aaaa_256=13_114_008)
TINY = dict(depths=(1, 1, 2, 1), embed_dims=(16, 24, 32, 40), num_heads=(2, 2, 4, 4))


# Our layout -> the official one, to build official-layout inputs: the layout's rename table inverted
_to_official = TransNeXt.checkpoint_layout.to_official


# ----------------------------------------------------------------------------------------------------------------
# direct references of the official formulas (attention_native.py / transnext.py), tables built per pair


def _pair_bias(attn, size, pool, pretrain) -> torch.Tensor:
    """The CPB bias ``[heads, N, P]`` from coordinates of every (query, key) pair (no factorisation)."""
    axes = []
    for q_len, k_len, p in zip(size, pool, pretrain):
        q = torch.arange(q_len, dtype=torch.float32)
        axes.append((q, F.adaptive_avg_pool1d(q[None], k_len)[0], p))
    qh, qw = torch.meshgrid(axes[0][0], axes[1][0], indexing='ij')
    kh, kw = torch.meshgrid(axes[0][1], axes[1][1], indexing='ij')
    rel = torch.stack([(qh.reshape(-1)[:, None] - kh.reshape(-1)[None]) / (pretrain[0] - 1) * 8,
                       (qw.reshape(-1)[:, None] - kw.reshape(-1)[None]) / (pretrain[1] - 1) * 8], -1)
    rel = torch.sign(rel) * torch.log2(rel.abs() + 1) / 3
    w = attn.cpb_fc1.weight
    return attn.cpb_fc2(F.relu(attn.cpb_fc1(rel.to(w.dtype)))).permute(2, 0, 1)


def _aggregated_reference(attn: AggregatedAttention, x, H, W, pretrain):
    """attention_native.AggregatedAttention.forward written out: unfolded window, one softmax over the concatenated
    local and pooled logits, learnable tokens added to the local weights."""
    B, N, C = x.shape
    h, d, ws = attn.num_heads, attn.head_dim, attn.window_size
    slot_valid = F.unfold(torch.ones(1, 1, H, W), ws, padding=ws // 2)[0]  # [ws*ws, N]
    pool = attn.pool_size(H, W)
    scale = torch.log(slot_valid.sum(0) + pool[0] * pool[1]).view(N, 1).to(x.dtype)  # a float32 buffer officially
    q_norm = F.normalize(attn.q(x).view(B, N, h, d).transpose(1, 2), dim=-1)
    q = (q_norm + attn.query_embedding) * F.softplus(attn.temperature) * scale
    k, v = attn.kv(x).chunk(2, -1)
    k = F.normalize(k.view(B, N, h, d), dim=-1).reshape(B, N, C)
    kv = torch.cat([k, v], -1).transpose(1, 2).reshape(B, 2 * C, H, W)
    k_loc, v_loc = F.unfold(kv, ws, padding=ws // 2).view(B, 2 * h, d, ws * ws, N).permute(0, 1, 4, 2, 3).chunk(2, 1)
    local = (q.unsqueeze(-2) @ k_loc).squeeze(-2) + attn.relative_pos_bias_local.unsqueeze(1)
    local = local.masked_fill(slot_valid.t() == 0, float('-inf'))
    pooled = attn.pool(x, H, W)
    kp, vp = attn.kv(pooled).view(B, -1, 2 * h, d).transpose(1, 2).chunk(2, 1)
    glob = q @ F.normalize(kp, dim=-1).transpose(-1, -2) + _pair_bias(attn, (H, W), pool, pretrain)
    p_loc, p_pool = torch.cat([local, glob], -1).softmax(-1).split([ws * ws, pool[0] * pool[1]], -1)
    w_loc = q_norm @ attn.learnable_tokens + attn.learnable_bias + p_loc
    out = (w_loc.unsqueeze(-2) @ v_loc.transpose(-1, -2)).squeeze(-2) + p_pool @ vp
    return attn.proj(out.transpose(1, 2).reshape(B, N, C))


def _attention_reference(attn: Attention, x, H, W, pretrain):
    B, N, C = x.shape
    q, k, v = attn.qkv(x).view(B, N, 3 * attn.num_heads, -1).transpose(1, 2).chunk(3, 1)
    logits = ((F.normalize(q, dim=-1) + attn.query_embedding) * F.softplus(attn.temperature) * math.log(N)) @ \
        F.normalize(k, dim=-1).transpose(-1, -2) + _pair_bias(attn, (H, W), (H, W), pretrain)
    return attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


@pytest.mark.parametrize('size, sr', [((7, 5), 2), ((5, 9), 4), ((1, 3), 2), ((2, 2), 8), ((6, 6), 3)])
def test_aggregated_attention_matches_official_formula(size, sr):
    attn = _perturbed(AggregatedAttention(16, 2, 3, sr_ratio=sr))
    H, W = size
    x = torch.randn(2, H * W, 16, dtype=torch.float64, requires_grad=True)
    tables = stage_tables(size, attn.pool_size(H, W), (14, 14), 3, 'cpu')
    out, ref = attn(x, H, W, tables), _aggregated_reference(attn, x, H, W, (14, 14))
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(out)
    params = [x, *attn.parameters()]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('size', [(7, 5), (1, 1), (4, 6)])
def test_full_attention_matches_official_formula(size):
    attn = _perturbed(Attention(16, 2))
    H, W = size
    x = torch.randn(2, H * W, 16, dtype=torch.float64, requires_grad=True)
    out = attn(x, H, W, stage_tables(size, size, (7, 7), None, 'cpu'))
    ref = _attention_reference(attn, x, H, W, (7, 7))
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(out)
    params = [x, *attn.parameters()]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_factorised_tables_equal_the_official_2d_unique():
    """The official ``torch.unique(pairs, dim=0)`` rows and inverse index equal ours (product of per-axis values)."""
    size, pool, pretrain = (9, 7), (3, 2), (8, 8)
    table, ih, iw = relative_position_cpb(size, pool, pretrain)
    q = [torch.arange(n, dtype=torch.float32) for n in size]
    k = [F.adaptive_avg_pool1d(a[None], m)[0] for a, m in zip(q, pool)]
    qh, qw = (t.reshape(-1) for t in torch.meshgrid(*q, indexing='ij'))
    kh, kw = (t.reshape(-1) for t in torch.meshgrid(*k, indexing='ij'))
    rel = torch.stack([(qh[:, None] - kh[None]) / 7 * 8, (qw[:, None] - kw[None]) / 7 * 8], -1).view(-1, 2)
    want, index = torch.unique(rel, return_inverse=True, dim=0)
    want = torch.sign(want) * torch.log2(want.abs() + 1) / torch.log2(torch.tensor(8.))
    assert torch.equal(table, want)
    n_w = table.shape[0] // (int(ih.max()) + 1)
    ours = (ih[:, None, :, None] * n_w + iw[None, :, None, :]).reshape(-1)  # pair ((qh, qw), (kh, kw))
    assert torch.equal(ours, index.view(-1))


# ----------------------------------------------------------------------------------------------------------------
# official parity (fixture written by tools/transnext_official_parity.py from the official code)


@pytest.mark.parametrize('key', ['micro', 'aaaa'])
def test_official_parity_fixture(key):
    fixture = torch.load(FIXTURE, weights_only=True)[key]
    model = TransNeXt(**fixture['cfg']).eval()
    state = {k: v.float() for k, v in fixture['state_dict'].items()}
    assert any(k.startswith('block1.') for k in state)  # the official layout
    model.load_state_dict(fit({'model': state}, model), strict=True)
    for size, logits in fixture['logits'].items():  # 64 (built size) and 96 (rebuilt, extrapolated coordinates)
        with torch.no_grad():
            torch.testing.assert_close(model(fixture_input(*size)), logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_counts_match_official(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_variant_layouts():
    with torch.device('meta'):
        micro, aaaa = timm.create_model('transnext_micro'), timm.create_model('transnext_micro_aaaa_256')
    assert isinstance(micro.stages[3].blocks[0].attn, Attention) and micro.pretrain_size == 224
    assert isinstance(aaaa.stages[3].blocks[0].attn, AggregatedAttention) and aaaa.pretrain_size == 256
    assert [s.blocks[0].attn.sr_ratio for s in aaaa.stages] == [16, 8, 4, 2]
    assert micro.stages[0].blocks[0].mlp.fc1.out_features == 2 * int(2 * 48 * 8 / 3)  # ConvGLU hidden
    assert timm.create_model('transnext_base_384', pretrained=False, device='meta').pretrained_cfg[
        'input_size'] == (3, 384, 384)


# ----------------------------------------------------------------------------------------------------------------
# model behaviour at low resolution


@pytest.mark.parametrize('size', [(67, 45), (8, 8), (33, 96)])
def test_any_input_size_forward_and_backward(size):
    torch.manual_seed(0)
    model = TransNeXt(**TINY, num_classes=5)
    x = torch.randn(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    feats = model.forward_intermediates(x, intermediates_only=True)
    assert [f.shape[1] for f in feats] == [16, 24, 32, 40]


def test_batch_elements_are_independent_and_tables_cached():
    torch.manual_seed(0)
    model = TransNeXt(**TINY, num_classes=5).eval()
    x = torch.randn(3, 3, 61, 53)
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(full[1:2], model(x[1:2]), atol=1e-5, rtol=1e-5)
    before = _stage_tables.cache_info().hits
    with torch.no_grad():
        model(x)
    assert _stage_tables.cache_info().hits >= before + 4  # one per stage at a seen size


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    assert_grad_checkpointing_matches(TransNeXt(**TINY, num_classes=5), torch.randn(2, 3, 40, 48))


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_official_layout_loads_strictly(wrap):
    official = assert_official_round_trip('transnext_micro', dict(TINY), _to_official, fit, wrap)
    assert 'block4.0.attn.qkv.weight' in official and 'block1.0.mlp.dwconv.dwconv.weight' in official
    assert 'norm4.weight' in official and 'patch_embed2.proj.weight' in official


def test_filter_errors_name_the_mismatch():
    model = timm.create_model('transnext_micro', **TINY)
    other = _to_official(timm.create_model('transnext_micro', depths=(1, 1, 1, 1), embed_dims=(16, 24, 32, 40),
                                           num_heads=(2, 2, 4, 4)).state_dict())
    with pytest.raises(ValueError, match=r'blocks per stage: checkpoint \[1, 1, 1, 1\] vs model \[1, 1, 2, 1\]'):
        fit(other, model)
    with pytest.raises(ValueError, match='not a TransNeXt checkpoint'):
        fit({'stem.weight': torch.zeros(1)}, model)
    # official tables, should a file hold them, are not weights: dropped (ours come from the input size)
    state = _to_official(model.state_dict())
    state['relative_pos_index1'] = torch.zeros(3, dtype=torch.long)
    model.load_state_dict(fit(state, model), strict=True)


def test_bad_input_is_named():
    model = TransNeXt(**TINY)
    with pytest.raises(ValueError, match=r'expected an image batch \[B, 3, H, W\]'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='window_size must be odd'):
        AggregatedAttention(16, 2, window_size=4)


@pytest.mark.xdist_group('compile')
@pytest.mark.parametrize('dynamic', [False, True])
def test_compile_fullgraph(dynamic):
    """torch.compile(fullgraph=True): the size tables come from one op (attnzoo::transnext_stage_tables, cached
    eagerly), so a static graph per size or, with dynamic=True, one graph for every size; values and gradients as
    in eager."""
    from backbones.transnext import TransNeXtStage
    torch.manual_seed(0)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    stage = TransNeXtStage(16, 16, 1, 2, 4, 2, 3, 14, [0.], downsample=False)
    compiled = torch.compile(stage, fullgraph=True, backend='aot_eager', dynamic=dynamic)
    sizes = ((9, 7), (5, 11), (12, 6))
    for size in sizes:
        x = torch.randn(1, 16, *size, requires_grad=True)
        out = compiled(x)
        out.sum().backward()
        grad, x.grad = x.grad, None
        ref = stage(x)
        ref.sum().backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(grad, x.grad)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == (1 if dynamic else len(sizes))


def test_group_matcher_keeps_stage_norms_with_their_stage():
    from timm.models import group_parameters
    model = timm.create_model('transnext_micro', device='meta', **TINY)
    groups = group_parameters(model, model.group_matcher(), reverse=True)
    for s, last in enumerate(d - 1 for d in TINY['depths']):
        assert groups[f'stages.{s}.norm.weight'] == groups[f'stages.{s}.blocks.{last}.norm1.weight']
