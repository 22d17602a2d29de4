"""Agent attention (ops.agent_attention + backbones._agent_inline) and InLine attention (ops.linear_attention
normalizer='inline'): against direct float64 formulas at odd sizes (forward and gradients), bf16 autocast, the
agent-bias sizing rule (identity at the build size, the official downstream rule elsewhere) and bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ops
from backbones._agent_inline import AgentAttention, AgentBiases, InLineAttention, agent_grid, pool_agents


def _rand(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)


def _agent_reference(q, k, v, a, bias1, bias2, scale):
    """The official order in float64: [B, H, T, D] matmuls and explicit softmaxes."""
    qh, kh, vh, ah = (t.double().transpose(1, 2) for t in (q, k, v, a))
    agent_v = torch.softmax(ah @ kh.transpose(-1, -2) * scale + bias1.double(), -1) @ vh
    return (torch.softmax(qh @ ah.transpose(-1, -2) * scale + bias2.double(), -1) @ agent_v).transpose(1, 2)


def _grads(out, leaves, seed=5):
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad((out.double() * cot).sum(), leaves)


@pytest.mark.parametrize('b,n,m,a,h,d', [(2, 13, 11, 4, 3, 8), (1, 7, 7, 9, 2, 16), (1, 1, 5, 1, 1, 4)])
def test_agent_attention_matches_reference(b, n, m, a, h, d):
    q, k, v, agents = _rand(b, n, h, d, seed=1), _rand(b, m, h, d, seed=2), _rand(b, m, h, d, seed=3), \
        _rand(b, a, h, d, seed=4)
    bias1, bias2 = _rand(h, a, m, seed=6), _rand(b, h, n, a, seed=7)
    leaves = (q, k, v, agents, bias1, bias2)
    out = ops.agent_attention(q, k, v, agents, bias1, bias2, scale=0.3)
    ref = _agent_reference(q, k, v, agents, bias1, bias2, 0.3)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    for got, want in zip(_grads(out, leaves), _grads(ref, leaves)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_agent_attention_bf16_autocast():
    q, k, v, agents = (_rand(2, 10, 2, 8, seed=s) for s in range(4))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ops.agent_attention(q, k, v, agents, _rand(2, 10, 10, seed=5), None)
    assert out.dtype == torch.bfloat16
    ref = _agent_reference(q, k, v, agents, _rand(2, 10, 10, seed=5), torch.zeros(1), 8 ** -0.5)
    torch.testing.assert_close(out.double(), ref, atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def _inline_reference(q, k, v, scale):
    """The InLine weights written out: 1/N + scale/N q_i . (k_j - mean k), float64, then times v."""
    qd, kd, vd = q.double(), k.double(), v.double()
    n = k.shape[1]
    w = 1 / n + torch.einsum('bnhd,bmhd->bhnm', qd, kd - kd.mean(1, keepdim=True)) * scale / n
    return torch.einsum('bhnm,bmhe->bnhe', w, vd)


@pytest.mark.parametrize('b,n,h,d', [(2, 13, 3, 8), (1, 1, 1, 4), (1, 35, 2, 16)])
def test_inline_matches_reference(b, n, h, d):
    q, k, v = _rand(b, n, h, d, seed=1), _rand(b, n, h, d, seed=2), _rand(b, n, h, d, seed=3)
    out = ops.linear_attention(q, k, v, normalizer='inline', feature_map='identity', scale=d ** -0.5)
    ref = _inline_reference(q, k, v, d ** -0.5)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)
    for got, want in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the weights sum to 1 per query: a constant value passes through unchanged
    const = torch.full_like(v, 0.7)
    torch.testing.assert_close(ops.linear_attention(q, k, const, normalizer='inline', scale=0.5), const)


@pytest.mark.parametrize('kernel', ['relu', 'leakyrelu', 'exp'])
def test_inline_kernels_against_reference_backend(kernel):
    q, k, v = (_rand(2, 9, 2, 4, seed=s, dtype=torch.float64) for s in range(3))
    out = ops.linear_attention(q, k, v, normalizer='inline', feature_map=kernel, scale=0.5)
    ref = ops.linear_attention(q, k, v, normalizer='inline', feature_map=kernel, scale=0.5, backend='reference')
    phi = dict(relu=F.relu, leakyrelu=F.leaky_relu, exp=lambda x: (0.2 * x).exp())[kernel]
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out, _inline_reference(phi(q), phi(k), v, 0.5))


def test_inline_bf16_state_in_fp32():
    # N = 4096 tokens: the state sums N terms; a bf16 sum would be off by far more than bf16 rounding
    q, k, v = (_rand(1, 4096, 1, 16, seed=s) for s in range(3))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ops.linear_attention(q, k, v, normalizer='inline', scale=0.25)
    assert out.dtype == torch.bfloat16
    ref = ops.linear_attention(*(t.bfloat16().double() for t in (q, k, v)), normalizer='inline', scale=0.25)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


def test_inline_rejects_normaliser_options():
    q = torch.randn(1, 4, 1, 4)
    with pytest.raises(ValueError, match='takes no key_reweight, eps'):
        ops.linear_attention(q, q, q, normalizer='inline', key_reweight=True, eps=1.0)
    with pytest.raises(TypeError, match='float scale'):
        ops.linear_attention(q, q, q, normalizer='inline', scale=torch.ones(1))
    with pytest.raises(ValueError, match='normalizer must be one of'):
        ops.linear_attention(q, q, q, normalizer='none')


# ---------------------------------------------------------------------------------------------------------------
# Agent biases: the sizing rule


def _official_classification_biases(m: AgentBiases, size):
    """Agent-Swin's classification AgentAttention: an/na resized to the window, ah/aw/ha/wa at their build size."""
    h, a = m.num_heads, m.agent_num
    b1 = F.interpolate(m.an_bias, size=size, mode='bilinear').reshape(h, a, -1) + (m.ah_bias + m.aw_bias).reshape(
        h, a, -1)
    b2 = F.interpolate(m.na_bias, size=size, mode='bilinear').reshape(h, a, -1).transpose(1, 2) + (
        m.ha_bias + m.wa_bias).reshape(h, -1, a)
    return b1, b2


def _official_downstream_biases(m: AgentBiases, hw, agent_shape):
    """Agent-Swin's detection AgentAttention (downstream/detection/mmdet/models/backbones/agent_swin.py), written
    out step by step: every bias resized to the map, then along the agent grid."""
    nh, p = m.num_heads, m.grid[0]
    da = agent_shape[0] * agent_shape[1]
    n = hw[0] * hw[1]

    def agents_last(t):  # [nh, p, p, n] -> [nh, n, da]
        t = F.interpolate(t.reshape(nh, p, p, n).permute(0, 3, 1, 2), size=agent_shape, mode='bilinear')
        return t.reshape(nh, n, da)

    pb1 = agents_last(F.interpolate(m.an_bias, size=hw, mode='bilinear')).permute(0, 2, 1)
    pb2 = agents_last(F.interpolate((m.ah_bias + m.aw_bias).squeeze(0), size=hw, mode='bilinear')).permute(0, 2, 1)
    ab1 = agents_last(F.interpolate(m.na_bias, size=hw, mode='bilinear'))
    ab2 = agents_last(F.interpolate((m.ha_bias + m.wa_bias).squeeze(0).permute(0, 3, 1, 2), size=hw,
                                    mode='bilinear'))
    return pb1 + pb2, ab1 + ab2


def test_agent_biases_identity_at_build_size():
    m = AgentBiases(3, 16, 14)
    got = m.biases((14, 14))
    for g, w in zip(got, _official_classification_biases(m, (14, 14))):
        assert torch.equal(g, w)
    # and the downstream rule at the build size / agent grid is the same thing (resizing to the size is a copy)
    for g, w in zip(got, _official_downstream_biases(m, (14, 14), (4, 4))):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-7)


@pytest.mark.parametrize('hw,agent_shape', [((25, 17), (4, 4)), ((9, 30), (9, 9)), ((5, 5), (3, 3))])
def test_agent_biases_follow_downstream_rule(hw, agent_shape):
    m = AgentBiases(2, 16, 14)
    for g, w in zip(m.biases(hw, agent_shape=agent_shape), _official_downstream_biases(m, hw, agent_shape)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_agent_biases_rectangular_build_grid():
    m = AgentBiases(2, 9, (7, 3))
    b1, b2 = m.biases((7, 3))
    assert b1.shape == (2, 9, 21) and b2.shape == (2, 21, 9)
    torch.testing.assert_close(b1, F.interpolate(m.an_bias, size=(7, 3), mode='bilinear').flatten(2)
                               + (m.ah_bias + m.aw_bias)[0].flatten(2))


def test_agent_module_any_size_matches_reference():
    m = AgentAttention(12, 3, 9, 6).double()
    x = torch.randn(2, 5, 11, 12, dtype=torch.float64)
    q, k, v = m.qkv(x).reshape(2, 5, 11, 3, 3, 4).unbind(3)
    agents = pool_agents(q, (3, 3))
    b1, b2 = m.biases((5, 11))
    ref = _agent_reference(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), agents, b1, b2, 0.5).reshape(2, 5, 11, 12)
    ref = m.proj(ref + m.dwc(v.reshape(2, 5, 11, 12).permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    torch.testing.assert_close(m(x), ref)
    m.agent_shape = (4, 4)  # the downstream agent grid
    assert m(x).shape == x.shape


def test_pool_agents_is_adaptive_average_pool():
    q = torch.randn(2, 7, 5, 3, 4)
    a = pool_agents(q, (3, 2))
    want = F.adaptive_avg_pool2d(q.flatten(3).permute(0, 3, 1, 2), (3, 2)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(a.flatten(2), want)


def test_inline_module_dynamic_residual():
    m = InLineAttention(8, 2).double()
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64)
    q, k, v = m.qkv(x).reshape(2, 5, 3, 3, 2, 4).unbind(3)
    attn = _inline_reference(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), 0.5).reshape(2, 5, 3, 8)
    kernels = m.residual(x.mean((1, 2))[..., None]).reshape(2, 8, 1, 3, 3)
    vmap = v.reshape(2, 5, 3, 8).permute(0, 3, 1, 2)
    res = torch.stack([F.conv2d(vmap[i:i + 1], kernels[i], padding=1, groups=8)[0] for i in range(2)])
    torch.testing.assert_close(m(x), m.proj(attn + res.permute(0, 2, 3, 1)))


def test_bad_input():
    with pytest.raises(ValueError, match='square number'):
        agent_grid(10)
    with pytest.raises(ValueError, match='NHWC map'):
        AgentAttention(12, 3, 9, 6)(torch.randn(2, 36, 12))
    with pytest.raises(ValueError, match='kernel_func'):
        InLineAttention(8, 2, kernel_func='softmax')


def test_window_attention_shift_can_be_skipped_per_call():
    """Swin's rule on a map no larger than the window (the skeleton's call): ``shift=False`` is the unshifted op."""
    shifted, plain = ops.WindowAttention2D(8, 2, 4, shift_size=2), ops.WindowAttention2D(8, 2, 4)
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(2, 6, 5, 8)
    torch.testing.assert_close(shifted(x, shift=False), plain(x))
    assert not torch.allclose(shifted(x), plain(x))
