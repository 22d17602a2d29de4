"""ops.linear_attention: the torch backend against the float64 reference (fwd + grads, odd sizes, RALA's and
L2ViT's settings), against the official formulas, the fp32 state under bf16 at detection-scale N, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ops

# (batch, height, width, heads, head_dim, value_dim)
SHAPES = [(2, 3, 5, 2, 8, 8), (1, 7, 1, 3, 4, 6), (1, 1, 1, 1, 4, 4)]
VARIANTS = {
    'rala': dict(feature_map='elu+1', key_reweight=True, key_reduce='mean', eps=1e-6),
    'l2vit': dict(feature_map='relu', key_reduce='sum', clamp_min=1e-2),  # a clamp that binds at these sizes
    'plain': dict(feature_map='identity', eps=0.5),
}


def _inputs(shape, variant, dtype, seed=0):
    b, hh, ww, h, d, dv = shape
    n = hh * ww
    g = torch.Generator().manual_seed(seed)
    t = {'query': torch.randn(b, n, h, d, generator=g, dtype=dtype),
         'key': torch.randn(b, n, h, d, generator=g, dtype=dtype),
         'value': torch.randn(b, n, h, dv, generator=g, dtype=dtype)}
    if variant == 'plain':
        t['query'], t['key'] = t['query'].abs() + 0.1, t['key'].abs() + 0.1
    t = {k: v.requires_grad_(True) for k, v in t.items()}
    kw = dict(VARIANTS[variant])
    if variant == 'rala':
        angle = 1.0 / (10000 ** torch.linspace(0, 1, d // 4, dtype=dtype)).repeat_interleave(2)
        kw['rope'] = ops.rope_2d(angle, hh, ww)
        kw['scale'] = 1.0 / n
    if variant == 'l2vit':
        kw['scale'] = torch.rand(h, generator=g, dtype=dtype).requires_grad_(True)
    return t, kw


def _run(backend, t, kw):
    out = ops.linear_attention(**t, **kw, backend=backend)
    g = torch.Generator().manual_seed(1)
    leaves = list(t.values()) + ([kw['scale']] if isinstance(kw.get('scale'), torch.Tensor) else [])
    return out, torch.autograd.grad((out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum(), leaves)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['fp64', 'fp32'])
@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def test_torch_matches_reference(shape, variant, dtype):
    t, kw = _inputs(shape, variant, dtype)
    out, grads = _run('torch', t, kw)
    ref, ref_grads = _run('reference', t, kw)
    tol = {} if dtype == torch.float64 else {'atol': 1e-5, 'rtol': 1e-4}
    for got, want in zip((out,) + grads, (ref,) + ref_grads):
        assert got.dtype == want.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **tol)


def _rotate_every_two(x):
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).flatten(-2)


def _rala_official(q, k, v, sin, cos):
    """RALA's ``GateLinearAttentionNoSilu`` core, term by term ([b, heads, N, d], any dtype)."""
    n, d = q.shape[-2:]
    qe, ke = F.elu(q) + 1, F.elu(k) + 1
    eff = torch.softmax(d ** -0.5 * qe.mean(-2, keepdim=True) @ ke.transpose(-1, -2), -1).transpose(-1, -2)
    ke = ke * eff * n
    qr, kr = qe * cos + _rotate_every_two(qe) * sin, ke * cos + _rotate_every_two(ke) * sin
    z = 1 / (qe @ ke.mean(-2, keepdim=True).transpose(-2, -1) + 1e-6)
    return qr @ ((kr.transpose(-2, -1) * n ** -0.5) @ (v * n ** -0.5)) * z


RALA = dict(feature_map='elu+1', key_reweight=True, key_reduce='mean', eps=1e-6)


def test_rala_and_l2vit_settings_are_the_official_formulas():
    """The op with each family's settings equals the official expression ([b, heads, N, d] layout)."""
    g = torch.Generator().manual_seed(0)
    b, h, hh, ww, d = 2, 2, 3, 4, 8
    n = hh * ww
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    angle = (1.0 / (10000 ** torch.linspace(0, 1, d // 4, dtype=torch.float64))).repeat_interleave(2)
    sin, cos = ops.rope_2d(angle, hh, ww)
    want = _rala_official(q, k, v, sin, cos)
    got = ops.linear_attention(*(x.transpose(1, 2) for x in (q, k, v)), rope=(sin, cos), scale=1.0 / n, **RALA)
    torch.testing.assert_close(got.transpose(1, 2), want)
    # L2ViT's LinearAttention (its clamp at 1e2 binds for these magnitudes: scale the inputs so it does for some)
    temperature = torch.rand(h, 1, 1, generator=g, dtype=torch.float64)
    qa, ka = F.relu(q * 6), F.relu(k * 6)
    denom = torch.clamp(qa @ ka.transpose(-2, -1).sum(-1, keepdim=True), 1e2)
    want = qa @ (ka.transpose(-2, -1) @ v * temperature) / denom
    assert (qa @ ka.transpose(-2, -1).sum(-1, keepdim=True) < 1e2).any()
    got = ops.linear_attention(*(x.transpose(1, 2) for x in (q * 6, k * 6, v)), feature_map='relu',
                               clamp_min=100.0, scale=temperature.flatten())
    torch.testing.assert_close(got.transpose(1, 2), want)


def test_rope_2d_matches_rala_tables():
    """Rows rotate the first half of the channels, columns the second (RALA's ``RoPE.forward``)."""
    angle = torch.tensor([1.0, 1.0, 0.1, 0.1])
    sin, cos = ops.rope_2d(angle, 2, 3)
    assert sin.shape == (6, 8)
    torch.testing.assert_close(sin[4], torch.sin(torch.tensor([1.0, 1, 0.1, 0.1, 1, 1, 0.1, 0.1])))  # (1, 1)
    torch.testing.assert_close(cos[2, 4:], torch.cos(2 * angle))  # (0, 2)
    torch.testing.assert_close(cos[2, :4], torch.ones(4))


def test_fp32_state_under_bf16_at_detection_scale():
    """N = 256^2 tokens (stride 4 of a 1024^2 image), RALA's setting, bf16 inputs: the op (fp32 state, norma-
    liser and re-weighting) is within bf16 output rounding of the exact result; the official expression computed
    in bf16 (its module under AMP) errs about 10x more (measured 1.5e-3 vs 1.7e-2)."""
    g = torch.Generator().manual_seed(0)
    hh = ww = 256
    n, d = hh * ww, 16
    q, k, v = (torch.randn(1, 1, n, d, generator=g).bfloat16() for _ in range(3))
    angle = (1.0 / (10000 ** torch.linspace(0, 1, d // 4))).repeat_interleave(2)
    sin, cos = ops.rope_2d(angle, hh, ww)
    exact = _rala_official(q.double(), k.double(), v.double(), sin.double(), cos.double())
    ours = ops.linear_attention(*(x.transpose(1, 2) for x in (q, k, v)), rope=(sin, cos), scale=1.0 / n, **RALA)
    assert ours.dtype == torch.bfloat16
    naive = _rala_official(q, k, v, sin.bfloat16(), cos.bfloat16())

    def err(x):
        return ((x.double() - exact).norm() / exact.norm()).item()

    assert err(ours.transpose(1, 2)) < 4e-3  # bf16 output rounding (2^-9 relative)
    assert err(naive) > 5 * err(ours.transpose(1, 2))


def test_autocast_casts_and_returns_autocast_dtype():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 50, 2, 8, generator=g) for _ in range(3))
    want = ops.linear_attention(q, k, v.bfloat16().float(), feature_map='relu', clamp_min=1.0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = ops.linear_attention(q, k, v.bfloat16(), feature_map='relu', clamp_min=1.0)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


def test_meta_device():
    q = torch.empty(2, 49, 2, 8, device='meta')
    assert ops.linear_attention(q, q, q).shape == (2, 49, 2, 8)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(feature_map='gelu'), ValueError, 'feature_map'),
    (dict(key_reduce='max'), ValueError, 'key_reduce'),
    (dict(eps=-1.0), ValueError, 'eps'),
    (dict(clamp_min='a'), ValueError, 'clamp_min'),
    (dict(scale=torch.ones(3)), ValueError, 'scale'),
    (dict(scale='x'), TypeError, 'scale'),
    (dict(rope=(torch.zeros(5, 8), torch.zeros(5, 8))), ValueError, 'rope sin'),
    (dict(key_reweight=1), TypeError, 'key_reweight'),
    (dict(value=torch.zeros(1, 4, 2, 8, dtype=torch.float64)), TypeError, 'value: float64'),
    (dict(key=torch.zeros(1, 5, 2, 8)), ValueError, 'key must have the shape'),
])
def test_bad_input(kwargs, error, match):
    t = {'query': torch.zeros(1, 4, 2, 8), 'key': torch.zeros(1, 4, 2, 8), 'value': torch.zeros(1, 4, 2, 8)}
    t.update({k: kwargs.pop(k) for k in ('query', 'key', 'value') if k in kwargs})
    with pytest.raises(error, match=match):
        ops.linear_attention(**t, **kwargs)
