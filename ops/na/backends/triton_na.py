"""Triton backend: fused neighborhood attention, forward and backward (kernels in ``_triton_kernels``).

Design (docs/design.md, 'Fused local attention'):

* **One 3-D kernel.** 1-D and 2-D problems get leading unit axes (length, kernel, stride, dilation 1), so the same
  kernels serve every rank; tensors keep their ``[B, *S, H, D]`` layout and strides (only the last dim must be
  contiguous), nothing is permuted or copied.
* **Dilation groups.** A program owns one dilation group ``g`` (per axis) and indexes tokens as ``qg * d + g``:
  inside a group, dilated attention is plain neighborhood attention over group coordinates ``qg``.
* **Tiles and halo.** A query tile is a ``T0 x T1 x T2`` box of group coordinates. Window starts and ends are
  monotone in the query coordinate, so the keys the tile needs are the box from ``start(first query)`` to
  ``end(last query)`` per axis; the kernel walks it in ``KT0 x KT1 x KT2`` key tiles with a FlashAttention-2
  online softmax (fp32 statistics and accumulators, ``exp2`` with ``log2 e`` folded into the scale and bias).
  Tiles are power-of-two boxes of 64 tokens (32 for fp32 at head_dim > 64; 128 queries in the forward of windows
  of >= 256 keys in 16-bit); blocked and grid patterns
  (kernel == stride, or kernel == group length, windows of 16-128 tokens) use tiles equal to the window, so each
  query tile needs exactly one key tile. Blocked windows of fewer than 16 tokens (HiLo's 2 x 2) would fill
  ``tl.dot``'s 16-row tiles mostly with padding: they run in the per-key kernels of ``_triton_small`` instead.
* **Masking only where needed.** A key tile is *full* when every query of the tile sees all of it
  (``start(last query) <= tile start`` and ``tile end <= end(first query)`` on every axis, inside the valid
  keys); full tiles skip the element mask, others mask with the exact NATTEN window rule (``_pattern``).
* **Backward (FA-2 split, no atomics except the fast dRPB).** ``delta = rowsum(dO * O) - dlse`` kernel; a dQ kernel
  with the forward's tile loop; a dK/dV kernel per key tile that walks the query tiles of its *inverse* window
  (the queries whose windows can reach the tile, computed analytically from the same monotone window rule); extra
  key/value gradients in a kernel over query chunks writing fp32 partials summed on the host.
* **Relative position bias.** Gathered from the table in the tile loops (forward, dQ and dK/dV). dRPB is the
  scatter-sum of dS over relative offsets, done in the dQ kernel (with 32-token tiles): each tile pair's dS is
  skewed (``tl.gather``) into tile-local offsets and column-summed, then shifted into a per-program register table
  over ``[2k-1]^3``; the table is atomically added (default) or, under ``torch.use_deterministic_algorithms(True)``,
  stored per program and summed on the host in a fixed order. Everything else is deterministic by construction.
* **Attention dropout.** FlashAttention's scheme: the kept-and-rescaled mask ``Z`` of every (batch, head, query,
  key) pair comes from Philox (``tl.rand``) at counter ``offset + query_row * n_keys + key`` (int64; extra tokens
  are keys ``n_tokens + e``), with ``(seed, offset)`` drawn by the caller from torch's generator. The forward
  accumulates ``(P Z) V`` with the normaliser and ``lse`` of the undropped ``P``; every backward kernel regenerates
  ``Z`` for its pairs: ``dV = (P Z)^T dO``, ``dS = P (Z dP - delta)`` with ``delta = rowsum(dO O)`` of the dropped
  output.
* **Routing hook.** Key tiles are visited as ``for it in range(n_tiles): origin = _tile_origin(it, ...)``. A routed
  pattern (BiFormer) passes a per-query-tile index list of key-tile origins and replaces ``_tile_origin`` by a
  load from it (and the dK/dV kernel iterates the inverse lists); masks, bias and softmax stay as they are.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch

from ... import _triton
from ..._registry import Backend
from ..pattern import NASpec

__all__ = ['BACKEND', 'forward', 'backward', 'check_inputs', 'tiled_only']

_LOG2E = 1.4426950408889634
_INTERPRET = _triton.interpreting()
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_GRID_YZ = 65535
# Entries of the dQ kernel's per-program dRPB register table, prod(pow2(2k-1)) over the (padded) axes. Measured
# on sm_80/sm_90 cubins (fp16/bf16, head_dim 32-128, 32-token tiles): 1-D k=2047, 2-D k=17..31 and 3-D k=7..8
# (4096 entries) take 238-255 registers per thread with 0 (at most 16) bytes of stack; 2-D k=33 (16384) and
# 3-D k=9 (32768) spill 40-72 bytes. Larger tables are declined when the rpb gradient is needed (torch serves).
# (fp32 at head_dim > 64 spills ~350 bytes on sm_90 at any table size: a cost of fp32, not of the table.)
_MAX_DRPB_TABLE = 4096
# Tile shapes ((T0, T1, T2), (KT0, KT1, KT2)) forcing every call's tiling; ``None`` picks them per problem. Tests
# set it to reach code paths (full/partial tiles, padded tiles) that default tiles only reach on large inputs.
_forced_tiles: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None


@functools.cache
def _kernels():
    """The tiled kernels, imported on first use (``import triton`` is slow and fails where Triton is absent; this
    module is imported wherever ``ops`` is, for :data:`BACKEND`)."""
    from . import _triton_kernels
    return _triton_kernels


@functools.cache
def _small():
    """The small-window kernels (``_triton_small``), imported on first use as :func:`_kernels`."""
    from . import _triton_small
    return _triton_small


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tiled_only():
    """Context manager: every problem to the tiled kernels, the small-window ones off (benchmarks measure the
    path those replace); reached through the registry: ``ops.get_backend('na', 'triton').extra['tiled_only']()``."""
    return _small().disabled()


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _pad3(values, fill) -> tuple:
    return (fill,) * (3 - len(values)) + tuple(values)


def _grow_tile(extents: tuple[int, int, int], target: int) -> tuple[int, int, int]:
    """Power-of-two box of about ``target`` tokens, squarest first, capped by the (power-of-two) extents."""
    caps = [_pow2(e) for e in extents]
    tile = [1, 1, 1]
    while math.prod(tile) < target:
        axes = [a for a in range(3) if tile[a] < caps[a]]
        if not axes:
            break
        tile[min(axes, key=lambda a: (tile[a], -a))] *= 2
    while math.prod(tile) < 16:  # tl.dot needs 16 rows; tiny maps pad the innermost (always real) axis
        tile[2] *= 2
    return tuple(tile)


@dataclass(frozen=True)
class _Geometry:
    lengths: tuple[int, int, int]
    dilation: tuple[int, int, int]
    valid: tuple[int, int, int]
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    causal: tuple[bool, bool, bool]
    q_tile: tuple[int, int, int]
    kv_tile: tuple[int, int, int]

    @property
    def group_lengths(self) -> tuple[int, ...]:
        """Longest dilation group per axis (group 0)."""
        return tuple(-(-n // d) for n, d in zip(self.lengths, self.dilation))

    @property
    def block_m(self) -> int:
        return max(16, _pow2(math.prod(self.q_tile)))

    @property
    def block_n(self) -> int:
        return max(16, _pow2(math.prod(self.kv_tile)))

    def tiles(self, tile: tuple[int, int, int]) -> tuple[int, ...]:
        return tuple(-(-g // t) for g, t in zip(self.group_lengths, tile))

    def constexprs(self) -> dict:
        names = {'KS': self.kernel, 'ST': self.stride, 'CA': self.causal, 'T': self.q_tile, 'KT': self.kv_tile}
        out = {f'{n}{a}': v[a] for n, v in names.items() for a in range(3)}
        out.update({f'ACT{a}': not (self.q_tile[a] == self.kv_tile[a] == self.kernel[a] == 1) for a in range(3)})
        out.update(BLOCK_M=self.block_m, BLOCK_N=self.block_n)
        return out


def _geometry(spatial: tuple[int, ...], spec: NASpec, rows: int = 64, q_rows: int | None = None) -> _Geometry:
    """Padded 3-D problem and its tiles: ``q_rows`` (default ``rows``) query and ``rows`` key tokens per tile."""
    lengths = _pad3(spatial, 1)
    kernel, stride = _pad3(spec.kernel_size, 1), _pad3(spec.stride, 1)
    dilation, causal = _pad3(spec.dilation, 1), _pad3(spec.is_causal, False)
    valid = _pad3(spec.valid_shape, 1) if spec.valid_shape is not None else lengths
    groups = tuple(-(-n // d) for n, d in zip(lengths, dilation))
    if _forced_tiles is not None:
        q_tile, kv_tile = _forced_tiles
    elif 16 <= math.prod(kernel) <= (2 * rows if rows >= 64 else rows) and all(
            n == 1 or (s == k and not c) or k == g for n, k, s, c, g in zip(lengths, kernel, stride, causal, groups)):
        q_tile = kv_tile = kernel  # blocked / grid: one full key tile per query tile (smaller windows share tiles)
    else:
        q_tile = _grow_tile(groups, q_rows or rows)
        halo = tuple(min(g, t + k - 1) for g, t, k in zip(groups, q_tile, kernel))
        kv_tile = _grow_tile(halo, rows)
    return _Geometry(lengths, dilation, valid, kernel, stride, causal, q_tile, kv_tile)


def _strides5(x: torch.Tensor, spatial_dims: int) -> tuple[int, ...]:
    st = x.stride()
    return (st[0], *_pad3(st[1:1 + spatial_dims], 0), st[1 + spatial_dims])


def _rpb_strides(rpb: torch.Tensor | None) -> tuple[int, int, int, int]:
    return (0, 0, 0, 0) if rpb is None else (rpb.stride(0), *_pad3(rpb.stride()[1:], 0))


def _extra_strides(x: torch.Tensor | None) -> tuple[int, int, int]:
    if x is None:
        return 0, 0, 0
    return (x.stride(0) if x.shape[0] > 1 else 0), x.stride(1), x.stride(2)


def _tile_rows(dtype: torch.dtype, head_dim: int) -> int:
    """Tokens per tile: 64, or 32 for fp32 at head_dim > 64 (fp32 dots stage their operands in shared memory)."""
    return 32 if dtype == torch.float32 and head_dim > 64 else 64


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return 'ieee'
    return 'tf32'


def _launch_opts(geom: _Geometry, head_dim: int, dtype: torch.dtype) -> dict:
    """Warps by tile size; fp32 tiles are not pipelined (their stage buffers would exceed the shared memory of
    sm_86/sm_89 GPUs at head_dim 128)."""
    big = geom.block_m * geom.block_n > 64 * 64 or head_dim > 64
    return {'num_warps': 8 if big else 4, 'num_stages': 1 if dtype == torch.float32 else 2}


def _device(x: torch.Tensor):
    """Context launching on ``x``'s CUDA device (triton launches on the current one)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _check_rpb_grad(spec: NASpec) -> None:
    """Raise when the dRPB register table of this kernel size would spill (see ``_MAX_DRPB_TABLE``)."""
    entries = math.prod(_pow2(2 * kk - 1) for kk in spec.kernel_size)
    if entries > _MAX_DRPB_TABLE:
        raise ValueError(f'the triton backend computes the rpb gradient in a register table of prod(pow2(2k-1)) = '
                         f'{entries} entries for kernel_size={spec.kernel_size}, more than {_MAX_DRPB_TABLE} spills '
                         'registers; use backend="torch" (or a frozen rpb, or no_grad) for this kernel size')


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: NASpec, rpb: torch.Tensor | None = None,
                 add_k: torch.Tensor | None = None, add_v: torch.Tensor | None = None) -> None:
    """Raise a clear error for anything these kernels cannot compute (the rpb gradient is checked only when
    autograd will need it: forward with rpb serves any kernel size)."""
    if q.dim() != spec.ndim + 3 or spec.ndim not in (1, 2, 3):
        raise ValueError(f'query must be [batch, *spatial ({spec.ndim} dims), heads, head_dim], got {tuple(q.shape)}')
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'query, key and value must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, '
                         f'{tuple(v.shape)}')
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f'the triton backend takes float16/bfloat16/float32 query, key and value of one dtype, got '
                        f'{q.dtype}, {k.dtype}, {v.dtype}')
    if spec.border != 'clamp':
        raise ValueError(f"the triton kernels implement border='clamp' windows only, got border={spec.border!r} "
                         "(automatic dispatch runs it on the torch backend)")
    spatial = q.shape[1:-2]
    if any(kk * dd > n for kk, dd, n in zip(spec.kernel_size, spec.dilation, spatial)):
        raise ValueError(f'kernel_size * dilation must be <= the input length on every axis, got kernel_size='
                         f'{spec.kernel_size}, dilation={spec.dilation} for spatial shape {tuple(spatial)}')
    head_dim = q.shape[-1]
    if head_dim % 8 or not 8 <= head_dim <= 128:
        raise ValueError(f'the triton backend needs head_dim a multiple of 8 in [8, 128], got {head_dim}')
    if max(t.numel() // max(t.shape[0], 1) for t in (q, k, v)) >= 2 ** 31:
        raise ValueError('the triton backend indexes one batch element with int32: query/key/value must have fewer '
                         f'than 2**31 elements per batch element, got {tuple(q.shape)}')
    if q.shape[0] > _MAX_GRID_YZ or q.shape[-2] > _MAX_GRID_YZ:
        raise ValueError(f'the triton backend supports batch and heads up to {_MAX_GRID_YZ}, got {tuple(q.shape)}')
    if rpb is not None:
        want = (q.shape[-2], *(2 * kk - 1 for kk in spec.kernel_size))
        if tuple(rpb.shape) != want:
            raise ValueError(f'rpb must have shape {want} (heads, 2*kernel_size-1 per axis), got {tuple(rpb.shape)}')
        if not rpb.is_floating_point() or rpb.device != q.device:
            raise TypeError(f'rpb must be a floating-point tensor on {q.device}, got {rpb.dtype} on {rpb.device}')
        if rpb.requires_grad and torch.is_grad_enabled():
            _check_rpb_grad(spec)
    if (add_k is None) != (add_v is None):
        raise ValueError('additional_keys and additional_values must be given together')
    if add_k is not None:
        h, d = q.shape[-2], head_dim
        if (add_k.dim() != 4 or add_k.shape[0] not in (1, q.shape[0]) or add_k.shape[2:] != (h, d)
                or add_v.shape != add_k.shape):
            raise ValueError(f'additional_keys/values must both be [batch (or 1), n_extra, {h}, {d}], got '
                             f'{tuple(add_k.shape)} and {tuple(add_v.shape)}')
        if add_k.dtype != q.dtype or add_v.dtype != q.dtype:
            raise TypeError(f'additional_keys/values must have the query dtype {q.dtype}, got {add_k.dtype}, '
                            f'{add_v.dtype}')
    if not (q.is_cuda or _INTERPRET):
        raise RuntimeError(f'the triton backend needs CUDA tensors (got device {q.device}); use backend="torch" '
                           'on CPU (or set TRITON_INTERPRET=1 before importing triton to debug the kernels)')


def _dropout_args(dropout_p: float, dropout_seed: torch.Tensor | None, n_keys: int) -> dict:
    """Kernel arguments of attention dropout: Philox ``(seed, offset)`` from ``dropout_seed`` (int tensor [2])."""
    if dropout_p <= 0:
        return dict(seed=0, rng_offset=0, n_keys=0, p_drop=0.0, DROPOUT=False)
    if dropout_seed is None or dropout_seed.numel() != 2 or dropout_seed.is_floating_point():
        raise ValueError('dropout_p > 0 needs dropout_seed, an integer tensor (seed, offset)')
    seed, offset = (int(x) for x in dropout_seed.tolist())
    return dict(seed=seed, rng_offset=offset, n_keys=n_keys, p_drop=float(dropout_p), DROPOUT=True)


def _n_keys(q: torch.Tensor, add_k: torch.Tensor | None) -> int:
    """Key ids of the dropout stream: the tokens, then the extra tokens."""
    return math.prod(q.shape[1:-2]) + (0 if add_k is None else add_k.shape[1])


def _lastdim_contiguous(x: torch.Tensor | None) -> torch.Tensor | None:
    return x if x is None or x.stride(-1) == 1 else x.contiguous()


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: NASpec, scale: float,
            rpb: torch.Tensor | None = None, add_k: torch.Tensor | None = None, add_v: torch.Tensor | None = None,
            dropout_p: float = 0.0, dropout_seed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(out [B, *S, H, D] in q.dtype, lse [B, *S, H] float32)`` of neighborhood attention.

    ``dropout_p > 0`` drops attention weights with the Philox stream of ``dropout_seed`` (int tensor
    ``(seed, offset)``); ``lse`` is that of the undropped weights, and :func:`backward` with the same
    ``dropout_p`` / ``dropout_seed`` regenerates the mask.
    """
    check_inputs(q, k, v, spec, rpb, add_k, add_v)
    q, k, v, add_k, add_v = (_lastdim_contiguous(t) for t in (q, k, v, add_k, add_v))
    batch, spatial, heads, head_dim = q.shape[0], tuple(q.shape[1:-2]), q.shape[-2], q.shape[-1]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, *spatial, heads), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse.fill_(float('-inf'))
    if _small().serves(spatial, spec, rpb, add_k, dropout_p):
        with _device(q):
            return _small().forward(q, k, v, spec, scale)
    # large windows: 128-query tiles (two warpgroups per tile, and less halo per query)
    big_window = q.dtype != torch.float32 and math.prod(spec.kernel_size) >= 256
    geom = _geometry(spatial, spec, _tile_rows(q.dtype, head_dim), 128 if big_window else None)
    nd = len(spatial)
    n_qt = geom.tiles(geom.q_tile)
    with _device(q):
        _kernels()._na_fwd_kernel[(math.prod(geom.dilation) * math.prod(n_qt), heads, batch)](
            q, k, v, out, lse, q if rpb is None else rpb, q if add_k is None else add_k,
            q if add_v is None else add_v,
            *_strides5(q, nd), *_strides5(k, nd), *_strides5(v, nd), *_strides5(out, nd), *_strides5(lse, nd),
            *_rpb_strides(rpb), *_extra_strides(add_k), *_extra_strides(add_v),
            *geom.lengths, *geom.dilation, *geom.valid, *n_qt, 0 if add_k is None else add_k.shape[1], head_dim,
            scale * _LOG2E, **_dropout_args(dropout_p, dropout_seed, _n_keys(q, add_k)), **geom.constexprs(),
            BLOCK_D=max(16, _pow2(head_dim)), HAS_RPB=rpb is not None, HAS_EXTRA=add_k is not None,
            DOT_PREC=_dot_precision(q.dtype),
            **_launch_opts(geom, head_dim, q.dtype))
    return out, lse


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, spec: NASpec, scale: float, rpb: torch.Tensor | None = None,
             add_k: torch.Tensor | None = None, add_v: torch.Tensor | None = None,
             grad_lse: torch.Tensor | None = None, need_rpb: bool = True, need_extra: bool = True,
             dropout_p: float = 0.0, dropout_seed: torch.Tensor | None = None) -> tuple:
    """Gradients ``(dq, dk, dv, drpb, dadd_k, dadd_v)`` (``None`` for absent or unneeded ones) of :func:`forward`.

    ``grad_lse`` is the gradient reaching ``lse`` (``[B, *S, H]`` or ``None``); it enters as
    ``delta = rowsum(dO * O) - grad_lse``.
    """
    check_inputs(q, k, v, spec, rpb, add_k, add_v)
    drop = _dropout_args(dropout_p, dropout_seed, _n_keys(q, add_k))
    need_rpb, need_extra = need_rpb and rpb is not None, need_extra and add_k is not None
    if need_rpb:
        _check_rpb_grad(spec)
    q, k, v, add_k, add_v = (_lastdim_contiguous(t) for t in (q, k, v, add_k, add_v))
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    if q.numel() == 0:
        zeros = (torch.zeros_like(t) if t is not None and need else None
                 for t, need in ((rpb, need_rpb), (add_k, need_extra), (add_v, need_extra)))
        return dq.zero_(), dk.zero_(), dv.zero_(), *zeros
    with _device(q):
        if _small().serves(tuple(q.shape[1:-2]), spec, rpb, add_k, dropout_p):
            return *_small().backward(grad_out, q, k, v, out, lse, spec, scale, grad_lse), None, None, None
        return _backward(grad_out, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse, dq, dk, dv,
                         need_rpb, need_extra, drop)


def _backward(grad_out, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse, dq, dk, dv, need_rpb,
              need_extra, drop) -> tuple:
    batch, spatial, heads, head_dim = q.shape[0], tuple(q.shape[1:-2]), q.shape[-2], q.shape[-1]
    do = grad_out.to(q.dtype).contiguous()
    out = out.contiguous()
    lse = lse.to(torch.float32).contiguous()
    block_d = max(16, _pow2(head_dim))
    dot_prec = _dot_precision(q.dtype)
    nd = len(spatial)

    delta = torch.empty_like(lse)
    n_rows = lse.numel()
    block_r = 64
    glse = None if grad_lse is None else grad_lse.to(torch.float32).contiguous()
    _kernels()._na_delta_kernel[(_cdiv(n_rows, block_r),)](out, do, delta if glse is None else glse, delta, n_rows,
                                                       head_dim, BLOCK_R=block_r, BLOCK_D=block_d,
                                                       HAS_GLSE=glse is not None)

    geom = _geometry(spatial, spec, _tile_rows(q.dtype, head_dim))
    # dRPB skews each dS tile into [BLOCK_M, (T + KT - 1)^3] registers: half-size tiles keep that 4x smaller
    geom_dq = _geometry(spatial, spec, 32) if need_rpb else geom
    common = (*_strides5(q, nd), *_strides5(k, nd), *_strides5(v, nd), *_strides5(do, nd))
    shape_args = (*geom.lengths, *geom.dilation, *geom.valid)
    n_qt = geom_dq.tiles(geom_dq.q_tile)
    n_qprog = math.prod(geom.dilation) * math.prod(n_qt)
    pg = tuple(_pow2(2 * kk - 1) for kk in geom.kernel)
    pr = tuple(_pow2(t + kt - 1) for t, kt in zip(geom_dq.q_tile, geom_dq.kv_tile))
    deterministic = torch.are_deterministic_algorithms_enabled()
    if not need_rpb:
        drpb_buf = q
    elif deterministic:
        drpb_buf = torch.empty((batch * heads * n_qprog, math.prod(pg)), dtype=torch.float32, device=q.device)
    else:
        drpb_buf = torch.zeros((heads, math.prod(pg)), dtype=torch.float32, device=q.device)
    _kernels()._na_bwd_dq_kernel[(n_qprog, heads, batch)](
        q, k, v, do, lse, delta, dq, q if rpb is None else rpb, drpb_buf,
        q if add_k is None else add_k, q if add_v is None else add_v,
        *common, *_strides5(dq, nd), *_strides5(lse, nd), *_rpb_strides(rpb),
        *_extra_strides(add_k), *_extra_strides(add_v),
        *shape_args, *n_qt, 0 if add_k is None else add_k.shape[1], head_dim, scale * _LOG2E, scale, heads,
        **drop, **geom_dq.constexprs(), BLOCK_D=block_d, PR0=pr[0], PR1=pr[1], PR2=pr[2],
        PG0=pg[0], PG1=pg[1], PG2=pg[2],
        HAS_RPB=rpb is not None, DRPB_ON=need_rpb, RPB_ATOMIC=not deterministic, HAS_EXTRA=add_k is not None,
        DOT_PREC=dot_prec,
        **_launch_opts(geom_dq, head_dim, q.dtype))

    n_kt = geom.tiles(geom.kv_tile)
    _kernels()._na_bwd_dkv_kernel[(math.prod(geom.dilation) * math.prod(n_kt), heads, batch)](
        q, k, v, do, lse, delta, dk, dv, q if rpb is None else rpb,
        *common, *_strides5(lse, nd), *_rpb_strides(rpb), *_strides5(dk, nd), *_strides5(dv, nd),
        *shape_args, *n_kt, head_dim, scale * _LOG2E, scale, **drop,
        **geom.constexprs(), BLOCK_D=block_d, HAS_RPB=rpb is not None, DOT_PREC=dot_prec,
        **_launch_opts(geom, head_dim, q.dtype))

    drpb = dadd_k = dadd_v = None
    if need_rpb:
        table = drpb_buf.view(batch, heads, n_qprog, -1).sum((0, 2)) if deterministic else drpb_buf
        table = table.view(heads, *pg)[(slice(None), *(slice(0, 2 * kk - 1) for kk in geom.kernel))]
        drpb = table.reshape(rpb.shape).to(rpb.dtype)
    if need_extra:
        dadd_k, dadd_v = _extra_backward(q, do, lse, delta, add_k, add_v, scale, nd, block_d, dot_prec, drop)
    return dq, dk, dv, drpb, dadd_k, dadd_v


def _extra_backward(q: torch.Tensor, do: torch.Tensor, lse: torch.Tensor, delta: torch.Tensor, add_k: torch.Tensor,
                    add_v: torch.Tensor, scale: float, nd: int, block_d: int, dot_prec: str, drop: dict) -> tuple:
    """Gradients of the extra keys/values: parallel over query chunks, partials summed in a fixed order."""
    batch, heads, head_dim = q.shape[0], q.shape[-2], q.shape[-1]
    if add_k.shape[1] == 0:
        return torch.zeros_like(add_k), torch.zeros_like(add_v)
    lengths = _pad3(tuple(q.shape[1:-2]), 1)
    n_tokens, n_extra = math.prod(lengths), add_k.shape[1]
    block_m = 64
    block_e = min(64, max(16, _pow2(n_extra)))
    n_eblocks = _cdiv(n_extra, block_e)
    n_sm = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 2
    want = max(1, (4 * n_sm) // (batch * heads * n_eblocks))
    n_chunks = min(_cdiv(n_tokens, block_m), want)
    chunk = block_m * _cdiv(_cdiv(n_tokens, block_m), n_chunks)
    n_chunks = _cdiv(n_tokens, chunk)
    partial_k = torch.empty((n_chunks, batch, n_extra, heads, head_dim), dtype=torch.float32, device=q.device)
    partial_v = torch.empty_like(partial_k)
    _kernels()._na_bwd_extra_kernel[(n_eblocks * n_chunks, heads, batch)](
        q, do, lse, delta, add_k, add_v, partial_k, partial_v,
        *_strides5(q, nd), *_strides5(do, nd), *_strides5(lse, nd),
        *_extra_strides(add_k), *_extra_strides(add_v),
        lengths[1], lengths[2], n_tokens, n_extra, n_eblocks, chunk, batch, heads, head_dim, scale * _LOG2E, scale,
        **drop, BLOCK_M=block_m, BLOCK_E=block_e, BLOCK_D=block_d, DOT_PREC=dot_prec)
    dims = (0, 1) if add_k.shape[0] == 1 else (0,)
    dadd_k = partial_k.sum(dims).view(add_k.shape).to(add_k.dtype)
    dadd_v = partial_v.sum(dims).view(add_v.shape).to(add_v.dtype)
    return dadd_k, dadd_v


BACKEND = Backend('na', 'triton', forward, backward, check_inputs=check_inputs, extra={'tiled_only': tiled_only},
                  devices=('cuda',), dtypes=_DTYPES, dropout=True, priority=20, probe=_triton.unavailable_reason)
if _triton.unavailable_reason(torch.device('cuda' if torch.cuda.is_available() else 'cpu')) is None:
    _kernels(), _small()  # Triton can run here: import the kernels now, never inside a torch.compile trace
