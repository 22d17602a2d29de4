"""ops.region_routing / ops.routed_attention (bi-level routing attention): the backends against the dense reference
(forward, lse and every gradient), the reference and the routing against the official gather formulation,
chunking, autocast, torch.compile, the custom-op contracts, fvcore FLOPs and bad input. The Triton kernels run in
the interpreter in a subprocess (TRITON_INTERPRET=1 must be set before Triton is imported)."""
from __future__ import annotations

import pytest
import torch

import ops
from ops.routed.backends import torch_routed

FAST = [n for n in ops.available_backends('cpu', 'routed') if n != 'reference']

# (batch, H, W, heads, head_dim, value_dim, n_win, topk, valid_shape)
CASES = [
    (1, 6, 6, 1, 8, 8, 3, 2, None),
    (2, 10, 15, 2, 4, 6, 5, 1, None),  # odd region size 2x3, topk = 1, value_dim != head_dim
    (1, 8, 12, 3, 8, 8, (2, 3), 6, None),  # topk = all regions: plain attention
    (2, 9, 6, 2, 8, 4, 3, 4, (8, 5)),  # padded keys masked
    (1, 4, 4, 2, 16, 16, 4, 3, None),  # 1x1 regions
]


def _ids(case):
    b, hgt, wid, h, d, dv, n, topk, valid = case
    return f'B{b}-{hgt}x{wid}-H{h}D{d}V{dv}-n{n}-k{topk}' + ('' if valid is None else f'-valid{valid}')


def _inputs(case, dtype, seed=0, duplicates=False):
    b, hgt, wid, h, d, dv, n, topk, valid = case
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, hgt, wid, h, d, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(b, hgt, wid, h, dv, generator=g, dtype=dtype)
    _, idx = ops.region_routing(q.flatten(-2), k.flatten(-2), n, topk)
    if duplicates and topk > 1:
        idx[:, ::2, 1] = idx[:, ::2, 0]  # a region listed twice counts twice
    return [t.requires_grad_() for t in (q, k, v)], idx


def _run(backend, q, k, v, idx, case, seed=1):
    """Output, lse and the gradients of q, k, v for random output and lse gradients."""
    n, valid = case[6], case[8]
    out, lse = ops.routed_attention(q, k, v, idx, n, scale=0.3, return_lse=True, valid_shape=valid, backend=backend)
    g = torch.Generator().manual_seed(seed)
    finite = torch.isfinite(lse)
    loss = (out * torch.randn(out.shape, generator=g).to(out.dtype)).sum() + torch.where(finite, lse, 0).sum()
    return [out, lse, *torch.autograd.grad(loss, (q, k, v))]


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['fp64', 'fp32'])
@pytest.mark.parametrize('case', CASES, ids=_ids)
@pytest.mark.parametrize('backend', FAST)
def test_backend_matches_reference(backend, case, dtype):
    (q, k, v), idx = _inputs(case, dtype, duplicates=True)
    got, want = _run(backend, q, k, v, idx, case), _run('reference', q, k, v, idx, case)
    tol = {} if dtype == torch.float64 else {'atol': 1e-5, 'rtol': 1e-4}
    for name, a, b in zip(('out', 'lse', 'dq', 'dk', 'dv'), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f'{name}: {m}')
    assert got[0].dtype == dtype and got[1].dtype == dtype


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('backend', FAST)
def test_half_precision_matches_reference(backend, dtype):
    case = CASES[3]
    (q, k, v), idx = _inputs(case, dtype)
    got, want = _run(backend, q, k, v, idx, case), _run('reference', q, k, v, idx, case)
    tol = 2e-2 if dtype == torch.float16 else 8e-2
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)


def _official_gather(q, k, v, idx, n_win, scale):
    """BiFormer's formulation (``ops/bra_legacy.py``): gather the routed regions' K/V, then dense attention."""
    b, hgt, wid, h, d = q.shape
    rh, rw = hgt // n_win, wid // n_win

    def regions(x):  # [B, H, W, h, c] -> [B, R, S, h, c]
        return x.reshape(b, n_win, rh, n_win, rw, h, -1).permute(0, 1, 3, 2, 4, 5, 6).reshape(
            b, n_win ** 2, rh * rw, h, x.shape[-1])

    qr, kr, vr = regions(q), regions(k), regions(v)
    take = torch.arange(b)[:, None, None]
    kg = kr[take, idx].flatten(2, 3)  # [B, R, topk * S, h, d]: the k-fold copy the op avoids
    vg = vr[take, idx].flatten(2, 3)
    attn = (torch.einsum('brshd,brthd->brhst', qr, kg) * scale).softmax(-1)
    out = torch.einsum('brhst,brthe->brshe', attn, vg)
    return out.reshape(b, n_win, n_win, rh, rw, h, -1).permute(0, 1, 3, 2, 4, 5, 6).reshape(b, hgt, wid, h, -1)


def test_reference_matches_the_official_gather():
    (q, k, v), idx = _inputs((2, 12, 12, 2, 8, 6, 4, 3, None), torch.float64, duplicates=True)
    out = ops.routed_attention(q, k, v, idx, 4, scale=0.25, backend='reference')
    torch.testing.assert_close(out, _official_gather(q, k, v, idx, 4, 0.25))


def test_region_routing_is_the_official_topk_routing():
    """Region means of q and k over all channels, ``(q_r * scale) k_r^T``, top-k, softmax over the top-k; detached
    unless diff_routing."""
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 8, 12, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    weights, idx = ops.region_routing(q, k, (2, 3), 4)
    qr = q.reshape(2, 2, 4, 3, 4, 16).mean((2, 4)).reshape(2, 6, 16)
    kr = k.reshape(2, 2, 4, 3, 4, 16).mean((2, 4)).reshape(2, 6, 16)
    top, want_idx = torch.topk((qr * 16 ** -0.5) @ kr.transpose(1, 2), 4, -1)
    assert idx.dtype == torch.int64 and idx.shape == (2, 6, 4) and torch.equal(idx, want_idx)
    torch.testing.assert_close(weights, top.softmax(-1))
    assert not weights.requires_grad
    weights, _ = ops.region_routing(q, k, (2, 3), 4, diff_routing=True, scale=0.5)
    top = torch.topk((qr * 0.5) @ kr.transpose(1, 2), 4, -1)[0]
    torch.testing.assert_close(weights, top.softmax(-1))
    assert torch.autograd.gradcheck(lambda a, b: ops.region_routing(a, b, (2, 3), 4, diff_routing=True)[0], (q, k))


def test_gradcheck_float64():
    (q, k, v), idx = _inputs((1, 4, 6, 2, 3, 2, 2, 2, (4, 5)), torch.float64)
    for backend in ['reference', *FAST]:
        assert torch.autograd.gradcheck(
            lambda a, b, c, backend=backend: ops.routed_attention(a, b, c, idx, 2, return_lse=True,
                                                                  valid_shape=(4, 5), backend=backend), (q, k, v))


def test_torch_backend_chunks_give_the_same_result(monkeypatch):
    """Query regions in many small chunks (the bounded-memory path of large maps) give the one-chunk result."""
    case = (2, 12, 12, 2, 8, 8, 4, 5, (11, 12))
    (q, k, v), idx = _inputs(case, torch.float64)
    whole = _run('torch', q, k, v, idx, case)
    monkeypatch.setattr(torch_routed, '_CHUNK_ELEMENTS', 1)  # one query region per chunk
    for a, b in zip(_run('torch', q, k, v, idx, case), whole):
        torch.testing.assert_close(a, b)


def test_query_that_sees_only_padded_keys_gets_zero_and_no_nan():
    q, k, v = (torch.randn(1, 4, 4, 1, 4, requires_grad=True) for _ in range(3))
    idx = torch.tensor([[[3], [3], [3], [0]]])  # only region 0 is real; regions 0-2 route to region 3 (padding)
    for backend in ['reference', *FAST]:
        out, lse = ops.routed_attention(q, k, v, idx, 2, return_lse=True, valid_shape=(2, 2), backend=backend)
        sees = torch.zeros(4, 4, dtype=torch.bool)
        sees[2:, 2:] = True
        assert (out[0, sees] != 0).all() and (out[0, ~sees] == 0).all()
        assert torch.isneginf(lse[0, ~sees]).all() and torch.isfinite(lse[0, sees]).all()
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        assert all(torch.isfinite(g).all() for g in grads)


def test_autocast_casts_like_sdpa_and_holds_on_the_op():
    """fp32 q meets bf16 k/v under autocast (computed and returned in bf16); an error naming them outside it."""
    (q, k, v), idx = _inputs(CASES[0], torch.float32)
    kb, vb = k.detach().bfloat16().requires_grad_(), v.detach().bfloat16().requires_grad_()
    with pytest.raises(TypeError, match='query, key, value must have one dtype outside autocast'):
        ops.routed_attention(q, kb, vb, idx, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ops.routed_attention(q, kb, vb, idx, 3)
        direct = torch.ops.attnzoo.routed_forward(q, kb, vb, idx, [3, 3], 0.5, None, 'torch')[0]
    assert out.dtype == direct.dtype == torch.bfloat16
    out.float().sum().backward()
    assert (q.grad.dtype, kb.grad.dtype) == (torch.float32, torch.bfloat16)
    torch.testing.assert_close(out, ops.routed_attention(q.detach().bfloat16(), kb, vb, idx, 3))


class _BRA(torch.nn.Module):
    """Routing plus token attention as BiFormer's attention uses them (without its projections)."""

    def forward(self, x):
        b, hgt, wid, c = x.shape
        weights, idx = ops.region_routing(x, x * 2, 2, 2)
        qkv = x.reshape(b, hgt, wid, 2, c // 2)
        return ops.routed_attention(qkv, qkv * 2, qkv.sin(), idx, 2, scale=c ** -0.5) * weights.sum()


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    m = _BRA()
    cm = torch.compile(m, fullgraph=True, backend='aot_eager')
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2):
            x = torch.randn(2, 6, 8, 16, requires_grad=True)
            y = cm(x)
            (gx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(y, m(x))
    torch.testing.assert_close(gx, torch.autograd.grad(m(x).sum(), x)[0])
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


def test_opcheck_forward_and_backward():
    (q, k, v), idx = _inputs(CASES[3], torch.float32)
    args = (q, k, v, idx, [3, 3], 0.3, [8, 5], 'torch')
    torch.library.opcheck(torch.ops.attnzoo.routed_forward.default, args)
    torch.library.opcheck(torch.ops.attnzoo.routed_forward.default, (q, k, v, idx, [3, 3], 0.3, None, 'torch'))
    out, lse = torch.ops.attnzoo.routed_forward(*args)
    detached = [t.detach() for t in (q, k, v, out, lse)]
    for grad_lse in (torch.randn_like(lse), None):
        torch.library.opcheck(torch.ops.attnzoo.routed_backward.default,
                              (torch.randn_like(out), grad_lse, *detached, idx, [3, 3], 0.3, [8, 5], 'torch'))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q, v = torch.empty(2, 6, 9, 3, 8), torch.empty(2, 6, 9, 3, 5)
        idx = torch.empty(2, 9, 4, dtype=torch.int64)
        out, lse = ops.routed_attention(q, q, v, idx, 3, return_lse=True)
    assert out.shape == (2, 6, 9, 3, 5) and lse.shape == (2, 6, 9, 3) and lse.dtype == torch.float32


def test_fvcore_flop_count():
    """Every query sees topk regions of S tokens: B * heads * N * topk * S * (head_dim + value_dim)."""
    from fvcore.nn import FlopCountAnalysis

    class Net(torch.nn.Module):
        def forward(self, q, v, idx):
            return ops.routed_attention(q, q, v, idx, 3)

    q, v = torch.randn(2, 6, 9, 3, 8), torch.randn(2, 6, 9, 3, 4)
    idx = torch.randint(0, 9, (2, 9, 4))
    flops = FlopCountAnalysis(Net(), (q, v, idx))
    flops.unsupported_ops_warnings(False)
    assert flops.by_operator()['routed_attention'] == 2 * 3 * 54 * 4 * 6 * (8 + 4)


def test_bad_input_errors():
    (q, k, v), idx = _inputs(CASES[0], torch.float32)
    x = q.detach().flatten(-2)
    with pytest.raises(ValueError, match=r'map \[6, 7\] does not divide into n_win=\(3, 3\).*pad_to_multiple'):
        ops.region_routing(torch.randn(1, 6, 7, 8), torch.randn(1, 6, 7, 8), 3, 2)
    with pytest.raises(ValueError, match=r'topk must be an int in \[1, n_regions=9\], got 10'):
        ops.region_routing(x, x, 3, 10)
    with pytest.raises(ValueError, match=r'topk must be an int in \[1, n_regions=9\], got 0'):
        ops.region_routing(x, x, 3, 0)
    with pytest.raises(ValueError, match='n_win must be an int >= 1'):
        ops.region_routing(x, x, 0, 1)
    with pytest.raises(ValueError, match='key must have the shape of query'):
        ops.region_routing(x, x[:, :3], 3, 1)
    with pytest.raises(ValueError, match=r'does not divide into n_win=\(4, 4\)'):
        ops.routed_attention(q, k, v, idx, 4)
    with pytest.raises(TypeError, match='indices must be an int64 tensor'):
        ops.routed_attention(q, k, v, idx.int(), 3)
    with pytest.raises(ValueError, match=r'indices must be \[batch=1, n_regions=9, topk\]'):
        ops.routed_attention(q, k, v, idx[:, :4], 3)
    with pytest.raises(ValueError, match=r'topk must be an int in \[1, n_regions=9\], got 10'):
        ops.routed_attention(q, k, v, torch.zeros(1, 9, 10, dtype=torch.int64), 3)
    bad = idx.clone()
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r'indices must be region numbers in \[0, 9\).*got values in \[0, 9\]'):
        ops.routed_attention(q, k, v, bad, 3)
    with pytest.raises(ValueError, match='value must be'):
        ops.routed_attention(q, k, v[:, :, :3], idx, 3)
    with pytest.raises(ValueError, match='query must be'):
        ops.routed_attention(x, x, x, idx, 3)
    with pytest.raises(ValueError, match='valid_shape must be None or'):
        ops.routed_attention(q, k, v, idx, 3, valid_shape=(7, 6))
    with pytest.raises(ValueError, match=r"backend must be None or one of \[.*'reference'"):
        ops.routed_attention(q, k, v, idx, 3, backend='nope')
    with pytest.raises(TypeError, match='return_lse must be a bool'):
        ops.routed_attention(q, k, v, idx, 3, return_lse=1)


def test_backend_registry_entries():
    assert ops.backend_names('routed')[-1] == 'reference'
    assert ops.available_backends('cpu', 'routed')[0] in ('torch', 'triton')
