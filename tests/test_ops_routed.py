"""ops.region_routing / ops.routed_attention (bi-level routing attention): the backends against the dense reference
(forward, lse and every gradient), the reference and the routing against the official gather formulation,
chunking, autocast, torch.compile, the custom-op contracts, fvcore FLOPs and bad input. The Triton kernels run in
the interpreter in a subprocess (TRITON_INTERPRET=1 must be set before Triton is imported)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ops
from ops.routed.backends import torch_routed

ROOT = Path(__file__).resolve().parents[1]
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


def _run(backend, q, k, v, idx, case, seed=1, lse_grad=True):
    """Output, lse and the gradients of q, k, v for random output (and lse) gradients. Without ``lse_grad`` the
    backward gets no lse gradient (the torch backend's fused CPU path)."""
    n, valid = case[6], case[8]
    out, lse = ops.routed_attention(q, k, v, idx, n, scale=0.3, return_lse=True, valid_shape=valid, backend=backend)
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g).to(out.dtype)).sum()
    if lse_grad:
        loss = loss + torch.where(torch.isfinite(lse), lse, 0).sum()
    return [out, lse, *torch.autograd.grad(loss, (q, k, v))]


@pytest.mark.parametrize('lse_grad', [True, False], ids=['lse-grad', 'out-grad'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['fp64', 'fp32'])
@pytest.mark.parametrize('case', CASES, ids=_ids)
@pytest.mark.parametrize('backend', FAST)
def test_backend_matches_reference(backend, case, dtype, lse_grad):
    (q, k, v), idx = _inputs(case, dtype, duplicates=True)
    got, want = (_run(name, q, k, v, idx, case, lse_grad=lse_grad) for name in (backend, 'reference'))
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
    small = [t[:1, :4, :6, :3].detach().requires_grad_() for t in (q, k)]
    assert torch.autograd.gradcheck(lambda a, b: ops.region_routing(a, b, (2, 3), 4, diff_routing=True)[0], small)


def test_region_routing_over_real_tokens_of_a_padded_map():
    """valid_shape: region means over the real tokens only, and regions of padding alone are routed last."""
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(1, 6, 6, 4, generator=g, dtype=torch.float64) for _ in range(2))
    weights, idx = ops.region_routing(q, k, 3, 9, valid_shape=(3, 5))  # rows 4-5 (the last region row) are padding
    mean = q[0, 2:3, 2:4].mean((0, 1))  # region 4 (rows 2-3, cols 2-3): its real tokens are row 2, cols 2-3
    torch.testing.assert_close(ops.routed.region_means(q, ops.routed.region_grid(6, 6, 3), (3, 5))[0, 4], mean)
    assert set(idx[0, :, -3:].flatten().tolist()) == {6, 7, 8} and torch.isfinite(weights).all()
    _, plain = ops.region_routing(q, k, 3, 6)
    assert not torch.equal(plain, idx[..., :6])


def test_gradcheck_float64():
    (q, k, v), idx = _inputs((1, 4, 4, 2, 2, 3, 2, 2, (4, 3)), torch.float64)
    for backend in ['reference', *FAST]:
        assert torch.autograd.gradcheck(
            lambda a, b, c, backend=backend: ops.routed_attention(a, b, c, idx, 2, return_lse=True,
                                                                  valid_shape=(4, 3), backend=backend), (q, k, v))


def test_torch_backend_chunks_give_the_same_result(monkeypatch):
    """Query regions in many small chunks (the bounded-memory path of large maps) give the one-chunk result."""
    case = (2, 12, 12, 2, 8, 8, 4, 5, (11, 12))
    (q, k, v), idx = _inputs(case, torch.float64)
    for unmasked in (case, case[:-1] + (None,)):  # the matmul path and (on CPU) the fused kernel path
        whole = _run('torch', q, k, v, idx, unmasked, lse_grad=False)
        monkeypatch.setattr(torch_routed, '_CHUNK_ELEMENTS', 1)  # one query region per chunk
        for a, b in zip(_run('torch', q, k, v, idx, unmasked, lse_grad=False), whole):
            torch.testing.assert_close(a, b)
        monkeypatch.undo()


def test_torch_backend_takes_the_fused_cpu_kernel_where_it_serves(monkeypatch):
    """Unmasked keys and value_dim == head_dim: the fused kernel, forward and backward (no lse gradient)."""
    calls = []
    for name in ('_FLASH_CPU', '_FLASH_CPU_BWD'):
        real = getattr(torch_routed, name)
        monkeypatch.setattr(torch_routed, name, lambda *a, _real=real, _name=name, **kw: calls.append(_name)
                            or _real(*a, **kw))
    for case, want in ((CASES[0], ['_FLASH_CPU', '_FLASH_CPU_BWD']), (CASES[3], []), (CASES[1], [])):
        calls.clear()
        (q, k, v), idx = _inputs(case, torch.float32)
        _run('torch', q, k, v, idx, case, lse_grad=False)
        assert calls == want, case


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


def test_compile_fullgraph_dynamic_matches_eager():
    """One graph for every resolution (detection / segmentation), forward and backward equal to eager."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    m = _BRA()
    cm = torch.compile(m, fullgraph=True, backend='aot_eager', dynamic=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for hw in ((6, 8), (10, 4)):
            x = torch.randn(2, *hw, 16, requires_grad=True)
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
    with pytest.raises(ValueError, match='valid_shape must be None or'):
        ops.region_routing(x, x, 3, 2, valid_shape=(0, 6))
    with pytest.raises(ValueError, match=r"backend must be None or one of \[.*'reference'"):
        ops.routed_attention(q, k, v, idx, 3, backend='nope')
    with pytest.raises(TypeError, match='return_lse must be a bool'):
        ops.routed_attention(q, k, v, idx, 3, return_lse=1)


def test_backend_registry_entries():
    assert ops.backend_names('routed')[-1] == 'reference'
    assert ops.available_backends('cpu', 'routed')[0] in ('torch', 'triton')


# --- the triton backend: interpreted on CPU (fp32/fp16), compiled for sm_80/sm_90, natively on CUDA ---

# (batch, H, W, heads, head_dim, value_dim, n_win, topk, valid_shape) + options
TRITON_CASES = [
    dict(case=(1, 6, 6, 1, 8, 8, 3, 2, None)),
    dict(case=(2, 6, 9, 2, 16, 8, 3, 1, None)),  # 2x3 regions, topk = 1, value_dim != head_dim
    dict(case=(1, 9, 6, 2, 8, 16, 3, 4, (8, 5)), duplicates=True, grad_lse=True),  # masked padded keys
    dict(case=(1, 8, 12, 2, 8, 8, (2, 3), 6, None)),  # topk = all regions
    dict(case=(1, 16, 16, 1, 8, 8, 1, 1, None)),  # one region of 256 tokens: several query and key tiles
    dict(case=(1, 4, 4, 1, 8, 8, 2, 1, (2, 2)), routes=[[3, 3, 3, 0]]),  # queries that see only padding
    dict(case=(1, 8, 8, 2, 16, 16, 2, 3, None), noncontig=True),  # q/k/v views of one qkv tensor
    dict(case=(1, 9, 6, 2, 8, 16, 3, 4, (8, 5)), duplicates=True, grad_lse=True, dtype='float16'),
    dict(case=(1, 8, 8, 2, 32, 32, 2, 3, None), dtype='float16'),
]
TRITON_TOL = {'float32': 1e-4, 'float16': 1e-2, 'bfloat16': 5e-2}


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to max(1, max |b|); inf unless both agree on which entries are infinite."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if not torch.equal(torch.isinf(a), torch.isinf(b)) or a.isnan().any():
        return float('inf')
    fin = torch.isfinite(b)
    return ((a[fin] - b[fin]).abs().max() / b[fin].abs().max().clamp_min(1)).item() if fin.any() else 0.0


def check_triton_case(c: dict, device: str, backend: str = 'triton') -> dict:
    """One case through ops.routed_attention(backend=backend) and the reference: the error per output (and on
    CUDA whether a second backward is bitwise equal)."""
    dtype = getattr(torch, c.get('dtype', 'float32'))
    b, hgt, wid, h, d, dv, n, topk, valid = c['case']
    gen = torch.Generator().manual_seed(0)
    if c.get('noncontig'):
        qkv = torch.randn(b, hgt, wid, h, 3, d, generator=gen).to(device, dtype)
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :dv]
    else:
        q, k = (torch.randn(b, hgt, wid, h, d, generator=gen).to(device, dtype) for _ in range(2))
        v = torch.randn(b, hgt, wid, h, dv, generator=gen).to(device, dtype)
    if c.get('routes'):
        idx = torch.tensor(c['routes'], device=device)[..., None]
    else:
        idx = ops.region_routing(q.flatten(-2), k.flatten(-2), n, topk)[1]
    if c.get('duplicates'):
        idx[:, ::2, -1] = idx[:, ::2, 0]
    grad = torch.randn(*q.shape[:-1], dv, generator=gen).to(device, dtype)
    grad_lse = torch.randn(q.shape[:-1], generator=gen).to(device) if c.get('grad_lse') else None
    def run(name):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out, lse = ops.routed_attention(*leaves, idx, n, scale=0.4, return_lse=True, valid_shape=valid, backend=name)
        loss = (out.float() * grad.float()).sum()
        if grad_lse is not None:
            loss = loss + torch.where(torch.isfinite(lse), lse * grad_lse, 0).sum()
        return [out, lse, *torch.autograd.grad(loss, leaves)]

    got, want = run(backend), run('reference')
    errors = {name: _max_err(a, b) for name, a, b in zip(('out', 'lse', 'dq', 'dk', 'dv'), got, want)}
    errors['dtypes_ok'] = (got[0].dtype == dtype and got[1].dtype == torch.float32
                           and all(g.dtype == dtype for g in got[2:]))
    if device == 'cuda':
        errors['bitwise_repeat'] = all(map(torch.equal, got, run(backend)))
    return errors


def _assert_triton_close(cases: list[dict], results: list[dict]) -> None:
    failures = []
    for c, errors in zip(cases, results):
        tol = TRITON_TOL[c.get('dtype', 'float32')]
        bad = {k: e for k, e in errors.items() if e is False or (not isinstance(e, bool) and not e <= tol)}
        if bad:
            failures.append(f'{c}: {bad}')
    assert not failures, '\n'.join(failures)


def _worker() -> None:
    """Subprocess entry (TRITON_INTERPRET=1): read cases (JSON) from stdin, print their errors (JSON)."""
    import dataclasses

    import triton.runtime.interpreter as interp

    from ops.routed.backends import _triton_kernels

    # test-only interpreter speed-ups, as tests/test_ops_triton.py: no int-overflow assertions (tiny sizes), no
    # re-patching of triton.language on each nested call of our @triton.jit helpers
    interp.interpreter_builder.options = dataclasses.replace(interp.interpreter_builder.options,
                                                             sanitize_overflow=False)
    nested_call = interp.InterpretedFunction.__call__

    def fast_call(self, *args, **kwargs):
        if self.fn.__globals__ is vars(_triton_kernels):
            return self.rewrite()(*args, **kwargs)
        return nested_call(self, *args, **kwargs)

    interp.InterpretedFunction.__call__ = fast_call
    torch.set_num_threads(1)
    cases = json.loads(sys.stdin.read())
    print(json.dumps([check_triton_case(c, 'cpu') for c in cases]))


def test_triton_interpreted_matches_reference():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', 'import test_ops_routed; test_ops_routed._worker()'],
                          input=json.dumps(TRITON_CASES), capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_triton_close(TRITON_CASES, json.loads(proc.stdout.strip().splitlines()[-1]))


CUDA_CASES = TRITON_CASES + [dict(c, dtype='bfloat16') for c in TRITON_CASES if c.get('dtype') == 'float16']


@pytest.mark.cuda
@pytest.mark.parametrize('c', CUDA_CASES, ids=[f'{i}-{c.get("dtype", "float32")}' for i, c in enumerate(CUDA_CASES)])
def test_triton_cuda_matches_reference(c):
    _assert_triton_close([c], [check_triton_case(c, 'cuda')])


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_torch_backend_cuda_matches_reference(dtype):
    cases = [dict(c, dtype=dtype) for c in TRITON_CASES if c.get('dtype', 'float32') == 'float32']
    torch.use_deterministic_algorithms(True)  # index_add_'s deterministic path
    try:
        _assert_triton_close(cases, [check_triton_case(c, 'cuda', 'torch') for c in cases])
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.cuda
def test_automatic_dispatch_prefers_triton_on_cuda():
    assert ops.available_backends('cuda', 'routed')[0] == 'triton'
    (q, k, v), idx = _inputs(CASES[1][:4] + (16, 16) + CASES[1][6:], torch.bfloat16)
    q, k, v, idx = (t.detach().cuda() for t in (q, k, v, idx))
    torch.testing.assert_close(ops.routed_attention(q, k, v, idx, 5),
                               ops.routed_attention(q, k, v, idx, 5, backend='triton'), atol=0, rtol=0)


def test_inverse_lists_are_the_csr_of_the_routing():
    from ops.routed.backends.triton_routed import inverse_lists

    idx = torch.tensor([[[1, 2], [1, 1], [0, 2]], [[2, 0], [2, 1], [2, 2]]])  # B=2, R=3, topk=2, duplicates
    offsets, query_regions = inverse_lists(idx, 3)
    assert offsets.dtype == query_regions.dtype == torch.int32
    assert offsets.tolist() == [0, 1, 4, 6, 7, 8, 12]
    assert query_regions.tolist() == [2, 0, 1, 1, 0, 2, 0, 1, 0, 1, 2, 2]


def test_triton_kernels_compile_for_gpu(monkeypatch, tmp_path, arch=90, dtype=torch.bfloat16):
    """Every kernel compiles to a Hopper cubin in bf16 (no GPU needed): what the interpreter accepts but the
    compiler rejects, and bf16, which the interpreter does not run."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ops.routed.backends import triton_routed
    from ops.routed.regions import region_grid

    if triton_routed._INTERPRET:
        pytest.skip('this worker imported the kernels in interpreter mode')
    monkeypatch.setenv('TRITON_CACHE_DIR', str(tmp_path))
    launches = []

    class Capture:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.kernel, args, kwargs))

    for name in ('_routed_fwd_kernel', '_routed_bwd_dq_kernel', '_routed_bwd_dkv_kernel'):
        monkeypatch.setattr(triton_routed._kernels(), name, Capture(getattr(triton_routed._kernels(), name)))
    q, v = torch.randn(1, 14, 14, 2, 32, dtype=dtype), torch.randn(1, 14, 14, 2, 64, dtype=dtype)
    idx = torch.randint(0, 49, (1, 49, 4))
    grid = region_grid(14, 14, 7)
    out, lse = triton_routed.forward(q, q, v, idx, grid, 0.2, (13, 13))
    triton_routed.backward(out, q, q, v, out, lse, idx, grid, 0.2, (13, 13), lse)
    assert len(launches) == 3
    types = {torch.float16: 'fp16', torch.bfloat16: 'bf16', torch.float32: 'fp32', torch.int64: 'i64',
             torch.int32: 'i32'}
    for kernel, args, kwargs in launches:
        values = dict(zip(kernel.arg_names, args), **kwargs)
        signature, constexprs = {}, {}
        for p in kernel.params:
            val = values[p.name]
            if p.is_constexpr:
                signature[p.name], constexprs[p.name] = 'constexpr', val
            else:
                signature[p.name] = ('*' + types[val.dtype] if isinstance(val, torch.Tensor)
                                     else 'fp32' if isinstance(val, float) else 'i32')
        options = {k: kwargs[k] for k in ('num_warps', 'num_stages') if k in kwargs}
        compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget('cuda', arch, 32),
                                  options=options)
        assert compiled.asm['cubin'], kernel.fn.__name__


@pytest.mark.parametrize('shapes, words', [
    (((1, 8, 8, 2, 12), (1, 8, 8, 2, 16)), 'head_dim a multiple of 8'),
    (((1, 8, 8, 2, 16), (1, 8, 8, 2, 136)), 'value_dim a multiple of 8'),
])
def test_triton_bad_input(shapes, words):
    from ops.routed.backends import triton_routed
    from ops.routed.regions import region_grid

    q, v = torch.randn(*shapes[0]), torch.randn(*shapes[1])
    with pytest.raises(ValueError, match=words):
        triton_routed.check_inputs(q, q, v, torch.zeros(1, 4, 1, dtype=torch.int64), region_grid(8, 8, 2))
    with pytest.raises(TypeError, match='float16/bfloat16/float32'):
        triton_routed.check_inputs(q.double(), q.double(), q.double(), None, region_grid(8, 8, 2))
