"""Triton kernels for tiny non-overlapping windows (blocked patterns of fewer than 16 tokens, e.g. HiLo's 2 x 2).

The tiled kernels of :mod:`._triton_kernels` compute ``tl.dot`` on tiles of at least 16 x 16 tokens (tensor-core
shapes): a 2 x 2 window (4 keys per query) then runs in 64-token tiles of which each query uses 4 keys — 16x the
work, 16x the key/value loads into the tile. Here a program owns ``BLOCK_W`` whole windows and walks their ``W``
keys one at a time (``tl.static_range``): logits are row dot products on CUDA cores, the softmax is online over
the ``W`` keys, so every computed logit is a real one (up to padding ``W`` to a power of two in the query rows).
Windows are independent, so the backward is one kernel as well: each program recomputes its windows' weights and
writes dQ, dK and dV of its own tokens — no inverse windows, no atomics, deterministic.

Served: ``kernel_size == stride`` on every axis (or a unit axis), no dilation, not causal, every length divisible
by the kernel, no valid-shape cut, no rpb, no extra tokens, no dropout — everything else goes to the tiled kernels.
"""
from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl

from ..pattern import NASpec

__all__ = ['serves', 'forward', 'backward']

_LOG2E = 1.4426950408889634
# Fewer tokens than this per window: the tiled kernels' 16-row ``tl.dot`` tiles would be mostly padding.
MAX_TOKENS = 15
# Register budget of a program: ``BLOCK_W * pow2(W) * BLOCK_D`` fp32 values per resident [windows, tokens, dim] tile.
_TILE_ELEMENTS = 4096
_enabled = True


@contextlib.contextmanager
def disabled():
    """Every problem to the tiled kernels while inside (benchmarks measure the path these kernels replace)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def serves(spatial: tuple[int, ...], spec: NASpec, rpb, add_k, dropout_p: float) -> bool:
    """Whether this problem is a blocked tiny-window one these kernels compute."""
    kernel = spec.kernel_size
    return (_enabled and rpb is None and add_k is None and dropout_p <= 0 and math.prod(kernel) <= MAX_TOKENS
            and spec.valid_shape in (None, tuple(spatial))
            and all(d == 1 for d in spec.dilation) and not any(spec.is_causal)
            and all(s == k and n % k == 0 for n, k, s in zip(spatial, kernel, spec.stride)))


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _pad3(values, fill) -> tuple:
    return (fill,) * (3 - len(values)) + tuple(values)


def _strides(x: torch.Tensor, nd: int) -> tuple[int, ...]:
    """``(batch, axis0, axis1, axis2, head)`` strides, unit leading axes padded with 0."""
    st = x.stride()
    return (st[0], *_pad3(st[1:1 + nd], 0), st[1 + nd])


@triton.jit
def _window_rows(pid, NW1, NW2, n_windows, KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
                 BLOCK_W: tl.constexpr):
    """Window ids of this program and the first token of each window per axis."""
    w = pid * BLOCK_W + tl.arange(0, BLOCK_W)
    return w // (NW1 * NW2) * KS0, (w // NW2) % NW1 * KS1, w % NW2 * KS2, w < n_windows


@triton.jit
def _token_offsets(b0, b1, b2, s0, s1, s2, KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
                   WP: tl.constexpr):
    """Offsets ``[BLOCK_W, WP]`` of every window's tokens (row-major in the window) and the real-token mask."""
    t = tl.arange(0, WP)
    t_ok = t < KS0 * KS1 * KS2
    t0, t1, t2 = t // (KS1 * KS2), (t // KS2) % KS1, t % KS2
    offs = ((b0[:, None] + t0[None, :]) * s0 + (b1[:, None] + t1[None, :]) * s1
            + (b2[:, None] + t2[None, :]) * s2)
    return offs, t_ok


@triton.jit
def _key_offsets(b0, b1, b2, s0, s1, s2, J: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr):
    """Offsets ``[BLOCK_W]`` of key ``J`` (row-major in the window) of every window."""
    return (b0 + J // (KS1 * KS2)) * s0 + (b1 + (J // KS2) % KS1) * s1 + (b2 + J % KS2) * s2


@triton.jit
def _small_fwd_kernel(
        Q, K, V, OUT, LSE,
        sqb, sq0, sq1, sq2, sqh, skb, sk0, sk1, sk2, skh, svb, sv0, sv1, sv2, svh,
        sob, so0, so1, so2, soh, slb, sl0, sl1, sl2, slh,
        NW1, NW2, n_windows, head_dim, qk_scale2,
        KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr, WP: tl.constexpr,
        BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid, h, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b0, b1, b2, w_ok = _window_rows(pid, NW1, NW2, n_windows, KS0, KS1, KS2, BLOCK_W)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    q_off, t_ok = _token_offsets(b0, b1, b2, sq0, sq1, sq2, KS0, KS1, KS2, WP)
    row_ok = w_ok[:, None] & t_ok[None, :]
    m3 = row_ok[:, :, None] & d_ok[None, None, :]
    q = tl.load(Q + b * sqb + h * sqh + q_off[:, :, None] + offs_d[None, None, :], mask=m3, other=0.0)
    q = q.to(tl.float32) * qk_scale2
    kd = w_ok[:, None] & d_ok[None, :]
    m_i = tl.full([BLOCK_W, WP], float('-inf'), tl.float32)
    l_i = tl.zeros([BLOCK_W, WP], tl.float32)
    acc = tl.zeros([BLOCK_W, WP, BLOCK_D], tl.float32)
    for j in tl.static_range(KS0 * KS1 * KS2):
        kj = tl.load(K + b * skb + h * skh + _key_offsets(b0, b1, b2, sk0, sk1, sk2, j, KS1, KS2)[:, None]
                     + offs_d[None, :], mask=kd, other=0.0).to(tl.float32)
        vj = tl.load(V + b * svb + h * svh + _key_offsets(b0, b1, b2, sv0, sv1, sv2, j, KS1, KS2)[:, None]
                     + offs_d[None, :], mask=kd, other=0.0).to(tl.float32)
        s = tl.sum(q * kj[:, None, :], axis=2)
        m_new = tl.maximum(m_i, s)
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new)
        l_i = l_i * alpha + p
        acc = acc * alpha[:, :, None] + p[:, :, None] * vj[:, None, :]
        m_i = m_new
    o_off, _ = _token_offsets(b0, b1, b2, so0, so1, so2, KS0, KS1, KS2, WP)
    tl.store(OUT + b * sob + h * soh + o_off[:, :, None] + offs_d[None, None, :],
             (acc / l_i[:, :, None]).to(OUT.dtype.element_ty), mask=m3)
    l_off, _ = _token_offsets(b0, b1, b2, sl0, sl1, sl2, KS0, KS1, KS2, WP)
    tl.store(LSE + b * slb + h * slh + l_off, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=row_ok)


@triton.jit
def _small_bwd_kernel(
        Q, K, V, OUT, DO, LSE, GLSE, DQ, DK, DV,
        sqb, sq0, sq1, sq2, sqh, skb, sk0, sk1, sk2, skh, svb, sv0, sv1, sv2, svh,
        sob, so0, so1, so2, soh, sdob, sdo0, sdo1, sdo2, sdoh, slb, sl0, sl1, sl2, slh,
        sgb, sg0, sg1, sg2, sgh,
        NW1, NW2, n_windows, head_dim, qk_scale2, scale,
        KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr, WP: tl.constexpr,
        BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr, HAS_GLSE: tl.constexpr,
):
    """dQ, dK, dV of whole windows (``DQ``/``DK``/``DV`` share the strides ``sg*``)."""
    pid, h, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b0, b1, b2, w_ok = _window_rows(pid, NW1, NW2, n_windows, KS0, KS1, KS2, BLOCK_W)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    q_off, t_ok = _token_offsets(b0, b1, b2, sq0, sq1, sq2, KS0, KS1, KS2, WP)
    o_off, _ = _token_offsets(b0, b1, b2, so0, so1, so2, KS0, KS1, KS2, WP)
    do_off, _ = _token_offsets(b0, b1, b2, sdo0, sdo1, sdo2, KS0, KS1, KS2, WP)
    l_off, _ = _token_offsets(b0, b1, b2, sl0, sl1, sl2, KS0, KS1, KS2, WP)
    row_ok = w_ok[:, None] & t_ok[None, :]
    m3 = row_ok[:, :, None] & d_ok[None, None, :]
    dd = offs_d[None, None, :]
    q = tl.load(Q + b * sqb + h * sqh + q_off[:, :, None] + dd, mask=m3, other=0.0).to(tl.float32)
    do = tl.load(DO + b * sdob + h * sdoh + do_off[:, :, None] + dd, mask=m3, other=0.0).to(tl.float32)
    o = tl.load(OUT + b * sob + h * soh + o_off[:, :, None] + dd, mask=m3, other=0.0).to(tl.float32)
    lse2 = tl.load(LSE + b * slb + h * slh + l_off, mask=row_ok, other=float('inf')) * 1.4426950408889634
    delta = tl.sum(do * o, axis=2)
    if HAS_GLSE:
        delta -= tl.load(GLSE + b * slb + h * slh + l_off, mask=row_ok, other=0.0)
    qs = q * qk_scale2
    kd = w_ok[:, None] & d_ok[None, :]
    g_off, _ = _token_offsets(b0, b1, b2, sg0, sg1, sg2, KS0, KS1, KS2, WP)
    gb = b * sgb + h * sgh
    dq = tl.zeros([BLOCK_W, WP, BLOCK_D], tl.float32)
    for j in tl.static_range(KS0 * KS1 * KS2):
        k_off = _key_offsets(b0, b1, b2, sk0, sk1, sk2, j, KS1, KS2)[:, None] + offs_d[None, :]
        v_off = _key_offsets(b0, b1, b2, sv0, sv1, sv2, j, KS1, KS2)[:, None] + offs_d[None, :]
        kj = tl.load(K + b * skb + h * skh + k_off, mask=kd, other=0.0).to(tl.float32)
        vj = tl.load(V + b * svb + h * svh + v_off, mask=kd, other=0.0).to(tl.float32)
        p = tl.exp2(tl.sum(qs * kj[:, None, :], axis=2) - lse2)  # 0 on padded rows (lse2 = inf)
        dv = tl.sum(p[:, :, None] * do, axis=1)
        ds = p * (tl.sum(do * vj[:, None, :], axis=2) - delta)
        dq += ds[:, :, None] * kj[:, None, :]
        dk = tl.sum(ds[:, :, None] * q, axis=1) * scale
        g_j = gb + _key_offsets(b0, b1, b2, sg0, sg1, sg2, j, KS1, KS2)[:, None] + offs_d[None, :]
        tl.store(DK + g_j, dk.to(DK.dtype.element_ty), mask=kd)
        tl.store(DV + g_j, dv.to(DV.dtype.element_ty), mask=kd)
    tl.store(DQ + gb + g_off[:, :, None] + dd, (dq * scale).to(DQ.dtype.element_ty), mask=m3)


def _launch(q: torch.Tensor, spec: NASpec) -> tuple[tuple[int, ...], dict, tuple]:
    """Grid, compile-time arguments and ``(NW1, NW2, n_windows)`` of a problem."""
    lengths, kernel = _pad3(tuple(q.shape[1:-2]), 1), _pad3(spec.kernel_size, 1)
    n_win = tuple(n // k for n, k in zip(lengths, kernel))
    wp, block_d = _pow2(math.prod(kernel)), max(16, _pow2(q.shape[-1]))
    block_w = max(1, min(64, _TILE_ELEMENTS // (wp * block_d)))
    grid = (triton.cdiv(math.prod(n_win), block_w), q.shape[-2], q.shape[0])
    consts = dict(KS0=kernel[0], KS1=kernel[1], KS2=kernel[2], WP=wp, BLOCK_W=block_w, BLOCK_D=block_d,
                  num_warps=4 if block_w * wp * block_d >= 2048 else 2)
    return grid, consts, (n_win[1], n_win[2], math.prod(n_win))


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: NASpec,
            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` as the tiled forward, for a problem :func:`serves` accepts (inputs last-dim contiguous)."""
    nd = q.dim() - 3
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    grid, consts, win = _launch(q, spec)
    _small_fwd_kernel[grid](q, k, v, out, lse, *_strides(q, nd), *_strides(k, nd), *_strides(v, nd),
                            *_strides(out, nd), *_strides(lse.unsqueeze(-1), nd), *win,
                            q.shape[-1], scale * _LOG2E, **consts)
    return out, lse


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, spec: NASpec, scale: float,
             grad_lse: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` of :func:`forward` (``grad_lse`` enters as ``delta = rowsum(dO * O) - grad_lse``)."""
    nd = q.dim() - 3
    do, out = grad_out.to(q.dtype).contiguous(), out.contiguous()
    lse = lse.to(torch.float32).contiguous()
    glse = None if grad_lse is None else grad_lse.to(torch.float32).contiguous()
    dq, dk, dv = (torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3))
    grid, consts, win = _launch(q, spec)
    _small_bwd_kernel[grid](q, k, v, out, do, lse, lse if glse is None else glse, dq, dk, dv,
                            *_strides(q, nd), *_strides(k, nd), *_strides(v, nd), *_strides(out, nd),
                            *_strides(do, nd), *_strides(lse.unsqueeze(-1), nd), *_strides(dq, nd), *win,
                            q.shape[-1], scale * _LOG2E, scale,
                            HAS_GLSE=glse is not None, **consts)
    return dq, dk, dv
