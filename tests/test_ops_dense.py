"""ops.dense_attention: backends against the reference, gradients (bias included), lse and the merge with NA,
autocast, torch.compile with dynamic shapes, fvcore FLOPs, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ops

FAST = [n for n in ops.backend_names('dense') if n != 'reference']

# (batch, queries N, keys M, heads, head_dim, value_dim, bias shape or None)
SHAPES = [
    (2, 7, 3, 2, 8, 8, None),
    (1, 5, 1, 3, 4, 6, (3, 5, 1)),  # M == 1, [heads, N, M], value_dim != head_dim
    (2, 6, 6, 2, 8, 4, (2, 1, 6, 6)),  # M == N, [B, 1, N, M]
    (2, 9, 4, 2, 16, 16, (9, 4)),  # [N, M]
    (1, 4, 10, 1, 8, 8, (1, 1, 1, 10)),  # M > N, a per-key bias
]


def _ids(shape):
    b, n, m, h, d, dv, bias = shape
    return f'B{b}N{n}M{m}H{h}D{d}V{dv}' + ('' if bias is None else '-bias' + 'x'.join(map(str, bias)))


def _inputs(shape, dtype, seed=0):
    b, n, m, h, d, dv, bias = shape
    g = torch.Generator().manual_seed(seed)
    out = {'query': torch.randn(b, n, h, d, generator=g, dtype=dtype),
           'key': torch.randn(b, m, h, d, generator=g, dtype=dtype),
           'value': torch.randn(b, m, h, dv, generator=g, dtype=dtype),
           'bias': None if bias is None else torch.randn(*bias, generator=g, dtype=dtype)}
    return {k: None if t is None else t.requires_grad_(True) for k, t in out.items()}


def _run(backend, inputs, return_lse, seed=1, **kwargs):
    """Outputs and the gradients of every input for random output (and lse) gradients."""
    res = ops.dense_attention(**inputs, return_lse=return_lse, backend=backend, **kwargs)
    outs = res if return_lse else (res,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    leaves = [t for t in inputs.values() if t is not None]
    return outs, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize('return_lse', [False, True], ids=['out', 'lse'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['fp64', 'fp32'])
@pytest.mark.parametrize('shape', SHAPES, ids=_ids)
@pytest.mark.parametrize('backend', FAST)
def test_backend_matches_reference(backend, shape, dtype, return_lse):
    inputs = _inputs(shape, dtype)
    outs, grads = _run(backend, inputs, return_lse)
    ref_outs, ref_grads = _run('reference', inputs, return_lse)
    tol = {} if dtype == torch.float64 else {'atol': 1e-5, 'rtol': 1e-4}
    for got, want in zip(outs + grads, ref_outs + ref_grads):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **tol)
    if return_lse:
        assert outs[1].shape == shape[:2] + shape[3:4] and outs[1].dtype == dtype


def test_reference_matches_direct_formula():
    """The oracle itself: softmax(q k^T * scale + bias) v with an explicit scale, and the lse."""
    q, k, v, bias = _inputs(SHAPES[1], torch.float64).values()
    out, lse = ops.dense_attention(q, k, v, bias, scale=.3, return_lse=True, backend='reference')
    logits = torch.einsum('bnhd,bmhd->bhnm', q, k) * .3 + bias
    torch.testing.assert_close(out, torch.einsum('bhnm,bmhe->bnhe', logits.softmax(-1), v))
    torch.testing.assert_close(lse, logits.logsumexp(-1).transpose(1, 2))


@pytest.mark.parametrize('backend', ['reference', *FAST])
def test_gradcheck_float64(backend):
    """Gradients of query, key, value and bias, through out and lse (double backward is not required)."""
    inputs = _inputs((1, 4, 3, 2, 3, 2, (2, 4, 3)), torch.float64)

    def fn(q, k, v, bias):
        return ops.dense_attention(q, k, v, bias, return_lse=True, backend=backend)

    assert torch.autograd.gradcheck(fn, tuple(inputs.values()))


@pytest.mark.parametrize('return_lse', [False, True], ids=['out', 'lse'])
@pytest.mark.parametrize('backend', ['reference', *FAST])
def test_fully_masked_rows(backend, return_lse):
    """A query whose keys are all masked gets output 0 (lse -inf) and sends no NaN into any gradient."""
    q, k, v, bias = _inputs((2, 5, 3, 2, 4, 4, (2, 5, 3)), torch.float64).values()
    mask = torch.zeros(2, 5, 3, dtype=torch.float64)
    mask[:, 1] = float('-inf')
    mask[1, 3, :2] = float('-inf')
    res = ops.dense_attention(q, k, v, bias + mask, return_lse=return_lse, backend=backend)
    out = res[0] if return_lse else res
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1])) and out[:, [0, 2, 3, 4]].abs().min() > 0
    if return_lse:
        lse = res[1]
        assert torch.isneginf(lse[:, 1]).all() and torch.isfinite(lse[:, [0, 2, 3, 4]]).all()
        merged, _ = ops.merge_attentions([out, out], [lse, lse])
        out = merged
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, bias))


def test_merge_with_na_equals_na_with_additional_tokens():
    """NA over the map, dense over extra tokens, merged through the lses == NA with those tokens in its softmax."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 7, 2, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ak, av = (torch.randn(2, 3, 2, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    rpb = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    leaves = [q, k, v, ak, av, rpb]
    joint = ops.na2d(q, k, v, 3, dilation=(2, 1), rpb=rpb, additional_keys=ak, additional_values=av)
    local, local_lse = ops.na2d(q, k, v, 3, dilation=(2, 1), rpb=rpb, return_lse=True)
    pooled, pooled_lse = ops.dense_attention(q.flatten(1, 2), ak, av, return_lse=True)
    merged, _ = ops.merge_attentions([local, pooled.unflatten(1, (6, 7))],
                                     [local_lse, pooled_lse.unflatten(1, (6, 7))])
    torch.testing.assert_close(merged, joint)
    grad = torch.randn(joint.shape, generator=g, dtype=torch.float64)
    for got, want in zip(torch.autograd.grad(merged, leaves, grad), torch.autograd.grad(joint, leaves, grad)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('return_lse', [False, True], ids=['out', 'lse'])
def test_autocast_cpu_bf16_casts_mixed_inputs(return_lse):
    """fp32 query and bias with bf16 key/value: cast under autocast (output bf16, grads in each input's dtype);
    outside autocast the same call raises naming the arguments."""
    q, k, v, bias = _inputs((2, 12, 5, 2, 16, 16, (2, 12, 5)), torch.float32).values()
    k, v = (t.detach().bfloat16().requires_grad_(True) for t in (k, v))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        res = ops.dense_attention(q, k, v, bias, return_lse=return_lse)
    out = res[0] if return_lse else res
    assert out.dtype == torch.bfloat16
    rounded = [t.detach().bfloat16().float() for t in (q, k, v, bias)]
    want = ops.dense_attention(*rounded, return_lse=return_lse, backend='reference')
    torch.testing.assert_close(out.float(), want[0] if return_lse else want, atol=5e-2, rtol=5e-2)
    if return_lse:
        assert res[1].dtype == torch.float32
        torch.testing.assert_close(res[1], want[1], atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert [t.grad.dtype for t in (q, k, v, bias)] == [torch.float32, torch.bfloat16, torch.bfloat16, torch.float32]
    with pytest.raises(TypeError, match='query, key, value, bias must have one dtype outside autocast, got '
                                        'query: float32, key: bfloat16, value: bfloat16, bias: float32'):
        ops.dense_attention(q, k, v, bias)


def test_strided_head_dim_keeps_the_fused_cpu_kernel():
    """A map flattened from NCHW gives D a stride of N; SDPA then falls back to its math path (T x T logits in
    memory: 780 MB vs 33 MB fwd+bwd at 4096 tokens, 4 heads) unless D is made unit-stride first, as the op does."""
    x = torch.randn(1, 64, 200)
    q = x.transpose(1, 2).unflatten(-1, (2, 32))  # [B, N, H, D], D stride N
    with torch.profiler.profile() as prof:
        out = ops.dense_attention(q, q, q)
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in {e.name for e in prof.events()}
    torch.testing.assert_close(out, ops.dense_attention(q.contiguous(), q.contiguous(), q.contiguous()))


def test_dropout():
    """dropout_p > 0 runs SDPA's dropout on the sdpa backend (seeded, differentiable); the reference has none."""
    q, k, v, bias = _inputs((1, 16, 8, 2, 8, 8, (16, 8)), torch.float32).values()
    torch.manual_seed(0)
    a = ops.dense_attention(q, k, v, bias, dropout_p=.5)
    torch.manual_seed(0)
    b = ops.dense_attention(q, k, v, bias, dropout_p=.5)
    assert torch.equal(a, b) and not torch.allclose(a, ops.dense_attention(q, k, v, bias))
    a.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, bias))
    with pytest.raises(RuntimeError, match="backend='reference'.*no attention dropout"):
        ops.dense_attention(q, k, v, dropout_p=.5, backend='reference')


class _CrossAttention(torch.nn.Module):
    """PVT/agent-style: tokens of a map attend to a few other tokens (with a bias, optionally with the lse)."""

    def __init__(self, dim=16, heads=2, return_lse=False):
        super().__init__()
        self.heads, self.return_lse = heads, return_lse
        self.q = torch.nn.Linear(dim, dim)
        self.kv = torch.nn.Linear(dim, 2 * dim)

    def forward(self, x, tokens, bias=None):
        q = self.q(x).unflatten(-1, (self.heads, -1))
        k, v = self.kv(tokens).unflatten(-1, (2, self.heads, -1)).unbind(2)
        if self.return_lse:
            out, lse = ops.dense_attention(q, k, v, bias, return_lse=True)
            return out.flatten(2) + lse.mean(-1, keepdim=True).to(out.dtype)
        return ops.dense_attention(q, k, v, bias).flatten(2)


@pytest.mark.parametrize('with_bias,return_lse', [(False, False), (True, True)], ids=['sdpa', 'bias-lse'])
def test_compile_fullgraph_dynamic_no_recompile(with_bias, return_lse):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    m = _CrossAttention(return_lse=return_lse)
    cm = torch.compile(m, fullgraph=True, backend='aot_eager', dynamic=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for n, tokens in ((10, 3), (14, 5)):
            args = [torch.randn(2, n, 16, requires_grad=True), torch.randn(2, tokens, 16, requires_grad=True)]
            if with_bias:
                args.append(torch.randn(2, n, tokens, requires_grad=True))
            y = cm(*args)
            grads = torch.autograd.grad(y.sum(), args)
            torch.testing.assert_close(y, m(*args))
            for got, want in zip(grads, torch.autograd.grad(m(*args).sum(), args)):
                torch.testing.assert_close(got, want)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


@pytest.mark.parametrize('with_bias,return_lse', [(False, False), (True, False), (True, True)],
                         ids=['sdpa', 'bias', 'bias-lse'])
def test_fvcore_flop_count(with_bias, return_lse):
    """fvcore counts N*M*(head_dim + value_dim) per batch and head: SDPA through our handle, the lse path as two
    matmuls."""
    from fvcore.nn import FlopCountAnalysis

    class Net(torch.nn.Module):
        def forward(self, q, k, v, bias=None):
            res = ops.dense_attention(q, k, v, bias, return_lse=return_lse)
            return res[0] if return_lse else res

    b, n, m, h, d, dv = 2, 12, 5, 3, 8, 4
    args = [torch.randn(b, n, h, d), torch.randn(b, m, h, d), torch.randn(b, m, h, dv)]
    if with_bias:
        args.append(torch.randn(h, n, m))
    flops = FlopCountAnalysis(Net(), tuple(args))
    flops.unsupported_ops_warnings(False)
    assert flops.total() == b * h * n * m * (d + dv)
    assert ('scaled_dot_product_attention' in flops.by_operator()) != return_lse


def test_fvcore_counts_causal_sdpa_pairs():
    """A causal SDPA call (e.g. from timm) counts only the pairs of its top-left causal mask."""
    from fvcore.nn import FlopCountAnalysis

    class Causal(torch.nn.Module):
        def forward(self, q, k):
            return F.scaled_dot_product_attention(q, k, k, is_causal=True)

    flops = FlopCountAnalysis(Causal(), (torch.randn(1, 2, 6, 8), torch.randn(1, 2, 4, 8)))
    pairs = 1 + 2 + 3 + 4 + 4 + 4
    assert flops.total() == 2 * pairs * (8 + 8)


def _t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


Q, K, V = _t(2, 6, 2, 8), _t(2, 3, 2, 8), _t(2, 3, 2, 4)

BAD = [
    ('query rank', lambda: ops.dense_attention(_t(6, 2, 8), K, V), ValueError, r'query must be \[batch, queries'),
    ('key rank', lambda: ops.dense_attention(Q, _t(2, 3, 16), V), ValueError, r'key must be \[batch, keys'),
    ('value rank', lambda: ops.dense_attention(Q, K, _t(2, 3, 2, 4, 1)), ValueError, r'value must be \['),
    ('not tensor', lambda: ops.dense_attention(Q, K.tolist(), V), TypeError, 'key must be a torch.Tensor'),
    ('int dtype', lambda: ops.dense_attention(Q, K, V.long()), TypeError, 'value must be a floating-point'),
    ('empty keys', lambda: ops.dense_attention(Q, _t(2, 0, 2, 8), _t(2, 0, 2, 4)), ValueError, 'key must not be'),
    ('heads', lambda: ops.dense_attention(Q, _t(2, 3, 3, 8), V), ValueError, 'key must be .*heads=2'),
    ('head_dim', lambda: ops.dense_attention(Q, _t(2, 3, 2, 4), V), ValueError, 'key must be .*head_dim=8'),
    ('batch', lambda: ops.dense_attention(Q, _t(1, 3, 2, 8), V), ValueError, 'key must be .batch=2'),
    ('value keys', lambda: ops.dense_attention(Q, K, _t(2, 4, 2, 4)), ValueError, 'value must be .*keys=3'),
    ('value heads', lambda: ops.dense_attention(Q, K, _t(2, 3, 1, 4)), ValueError, 'value must be .*heads=2'),
    ('bias not broadcastable', lambda: ops.dense_attention(Q, K, V, _t(2, 6, 4)), ValueError,
     r'bias must be broadcastable to \[batch, heads, queries, keys\] = \(2, 2, 6, 3\), got \(2, 6, 4\)'),
    ('bias rank', lambda: ops.dense_attention(Q, K, V, _t(1, 2, 2, 6, 3)), ValueError, 'bias must be broadcastable'),
    ('bias dtype', lambda: ops.dense_attention(Q, K, V, torch.zeros(6, 3, dtype=torch.bool)), TypeError,
     'bias must be a floating-point'),
    ('bias mixed dtype', lambda: ops.dense_attention(Q, K, V, _t(6, 3, dtype=torch.float64)), TypeError,
     'bias: float64'),
    ('scale', lambda: ops.dense_attention(Q, K, V, scale='x'), TypeError, 'scale'),
    ('return_lse', lambda: ops.dense_attention(Q, K, V, return_lse=1), TypeError, 'return_lse must be a bool'),
    ('dropout', lambda: ops.dense_attention(Q, K, V, dropout_p=1.), ValueError, 'dropout_p'),
    ('dropout lse', lambda: ops.dense_attention(Q, K, V, dropout_p=.1, return_lse=True), ValueError, 'return_lse'),
    ('unknown backend', lambda: ops.dense_attention(Q, K, V, backend='flash'), ValueError,
     r"backend must be None or one of \['sdpa', 'reference'\] for 'dense', got 'flash'"),
]


@pytest.mark.parametrize('name,fn,exc,match', BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()
