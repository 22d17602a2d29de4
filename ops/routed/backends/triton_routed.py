"""Triton backend of routed attention: fused forward and backward, no gathered K/V (kernels in ``_triton_kernels``).

Design (docs/design.md, 'Fused local attention', routing):

* **No permutation, no copy.** Tensors keep their ``[B, H, W, heads, D]`` layout; a program addresses a token by
  its map coordinates, computed from its region number and its position in the region.
* **Query tiles.** A program owns ``BLOCK_M`` tokens of one query region (regions of more than 64 tokens span
  several programs; regions of 4 tokens pad a 16-row tile: ``tl.dot`` needs 16 rows).
* **Keys: the routed sequence.** A query region's keys are the concatenation of its ``topk`` regions' tokens; the
  program walks that sequence in ``BLOCK_N``-long tiles (a tile may span several small regions, or part of a big
  one), loading each column's region from the index list: masks are key validity only (``valid_shape``, the
  sequence end). FlashAttention-2 online softmax, fp32 statistics and accumulators, ``exp2``.
* **Backward, deterministic without atomics.** ``delta = rowsum(dO * O) - dlse`` (torch); a dQ kernel with the
  forward's loop; a dK/dV kernel per key tile that walks the *inverse* list of its key region — the query regions
  that routed to it, from a per-batch stable sort of the indices into CSR (``offsets``, ``query regions``), built
  with torch on the device (no host sync). A region listed twice counts twice, as in the forward.
"""
from __future__ import annotations

import contextlib
import functools

import torch

from ... import _triton
from ..._registry import Backend
from ..regions import RegionGrid

__all__ = ['BACKEND', 'forward', 'backward', 'check_inputs', 'inverse_lists']

_LOG2E = 1.4426950408889634
_INTERPRET = _triton.interpreting()
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_GRID_YZ = 65535


@functools.cache
def _kernels():
    """The kernels, imported on first use (``import triton`` is slow and fails where Triton is absent; this module
    is imported wherever ``ops`` is, for :data:`BACKEND`)."""
    from . import _triton_kernels
    return _triton_kernels


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return 'ieee'
    return 'tf32'


def _blocks(grid: RegionGrid, q: torch.Tensor, v: torch.Tensor) -> dict:
    """Tile sizes: a region's tokens (16 to 64) per region-side tile, 64 along the routed sequences (32 for fp32 at
    head dims above 64: fp32 operands are staged in shared memory)."""
    rows = 32 if q.dtype == torch.float32 and max(q.shape[-1], v.shape[-1]) > 64 else 64
    return dict(region=min(rows, max(16, _pow2(grid.region_size))), seq=rows,
                BLOCK_D=max(16, _pow2(q.shape[-1])), BLOCK_DV=max(16, _pow2(v.shape[-1])),
                num_warps=4, num_stages=1 if q.dtype == torch.float32 else 2)


def _device(x: torch.Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, grid: RegionGrid) -> None:
    """Raise a clear error for anything these kernels cannot compute."""
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f'the triton backend takes float16/bfloat16/float32 query, key and value of one dtype, got '
                        f'{q.dtype}, {k.dtype}, {v.dtype}')
    for name, dim in (('head_dim', q.shape[-1]), ('value_dim', v.shape[-1])):
        if dim % 8 or not 8 <= dim <= 128:
            raise ValueError(f'the triton backend needs {name} a multiple of 8 in [8, 128], got {dim}')
    if max(t.numel() // max(t.shape[0], 1) for t in (q, k, v)) >= 2 ** 31:
        raise ValueError('the triton backend indexes one batch element with int32: query/key/value must have fewer '
                         f'than 2**31 elements per batch element, got {tuple(q.shape)}')
    if q.shape[0] > _MAX_GRID_YZ or q.shape[-2] > _MAX_GRID_YZ:
        raise ValueError(f'the triton backend supports batch and heads up to {_MAX_GRID_YZ}, got {tuple(q.shape)}')
    if not (q.is_cuda or _INTERPRET):
        raise RuntimeError(f'the triton backend needs CUDA tensors (got device {q.device}); use backend="torch" '
                           'on CPU (or set TRITON_INTERPRET=1 before importing triton to debug the kernels)')


def _lastdim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _valid(grid: RegionGrid, valid_shape) -> tuple[int, int]:
    return grid.shape if valid_shape is None else tuple(valid_shape)


def _s4(x: torch.Tensor) -> tuple[int, int, int, int]:
    """(batch, row, column, head) strides of a ``[B, H, W, heads(, D)]`` tensor."""
    return tuple(x.stride()[:4])


def forward(q, k, v, indices, grid: RegionGrid, scale: float, valid_shape=None):
    """``(out [B, H, W, heads, Dv] in q.dtype, lse [B, H, W, heads] float32)``."""
    q, k, v = (_lastdim_contiguous(t) for t in (q, k, v))
    indices = indices.contiguous()
    b, _, _, h, d = q.shape
    dv = v.shape[-1]
    out = q.new_empty(*q.shape[:-1], dv)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    blk = _blocks(grid, q, v)
    qt = -(-grid.region_size // blk['region'])
    valid_h, valid_w = _valid(grid, valid_shape)
    with _device(q):
        _kernels()._routed_fwd_kernel[(grid.n_regions * qt, h, b)](
            q, k, v, indices, out, lse, *_s4(q), *_s4(k), *_s4(v), *_s4(out), *_s4(lse), *indices.stride()[:2],
            grid.n_w, indices.shape[-1], valid_h, valid_w, d, dv, scale * _LOG2E,
            RH=grid.rh, RW=grid.rw, QT=qt, BLOCK_M=blk['region'], BLOCK_N=blk['seq'], BLOCK_D=blk['BLOCK_D'],
            BLOCK_DV=blk['BLOCK_DV'], DOT_PREC=_dot_precision(q.dtype), num_warps=blk['num_warps'],
            num_stages=blk['num_stages'])
    return out, lse


def inverse_lists(indices: torch.Tensor, n_regions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR of the routing's inverse: ``offsets [B * R + 1]`` and ``query_regions [B * R * topk]`` (int32), so that
    the query regions that routed to key region ``r`` of batch ``b`` are ``query_regions[offsets[b * R + r] :
    offsets[b * R + r + 1]]`` (ascending; a query region listed twice appears twice). Deterministic (stable sort)."""
    b, r, topk = indices.shape
    keys = (indices + torch.arange(b, device=indices.device)[:, None, None] * n_regions).reshape(-1)
    sorted_keys, order = torch.sort(keys, stable=True)
    query_regions = ((order % (r * topk)) // topk).to(torch.int32)
    bounds = torch.arange(b * n_regions + 1, device=indices.device, dtype=sorted_keys.dtype)
    return torch.searchsorted(sorted_keys, bounds).to(torch.int32), query_regions


def backward(grad_out, q, k, v, out, lse, indices, grid: RegionGrid, scale: float, valid_shape=None,
             grad_lse=None):
    """``(dq, dk, dv)`` in the inputs' dtypes, recomputed from ``lse``."""
    q, k, v, grad_out = (t.contiguous() for t in (q, k, v, grad_out))
    indices = indices.contiguous()
    lse = lse.float().contiguous()
    delta = (grad_out.float() * out.float()).sum(-1)
    if grad_lse is not None:
        delta -= grad_lse.float()
    b, _, _, h, d = q.shape
    dv_dim = v.shape[-1]
    blk = _blocks(grid, q, v)
    valid_h, valid_w = _valid(grid, valid_shape)
    common = dict(RH=grid.rh, RW=grid.rw, BLOCK_D=blk['BLOCK_D'], BLOCK_DV=blk['BLOCK_DV'],
                  DOT_PREC=_dot_precision(q.dtype), num_warps=blk['num_warps'], num_stages=blk['num_stages'])
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    offsets, query_regions = inverse_lists(indices, grid.n_regions)
    strides = (*_s4(q), *_s4(k), *_s4(v), *_s4(grad_out), *_s4(lse))
    qt = -(-grid.region_size // blk['region'])
    with _device(q):
        _kernels()._routed_bwd_dq_kernel[(grid.n_regions * qt, h, b)](
            q, k, v, grad_out, lse, delta, indices, dq, *strides, *indices.stride()[:2],
            grid.n_w, indices.shape[-1], valid_h, valid_w, d, dv_dim, scale * _LOG2E, scale,
            QT=qt, BLOCK_M=blk['region'], BLOCK_N=blk['seq'], **common)
        _kernels()._routed_bwd_dkv_kernel[(grid.n_regions * qt, h, b)](
            q, k, v, grad_out, lse, delta, offsets, query_regions, dk, dv, *strides,
            grid.n_regions, grid.n_w, valid_h, valid_w, d, dv_dim, scale * _LOG2E, scale,
            KT=qt, BLOCK_M=blk['seq'], BLOCK_N=blk['region'], **common)
    return dq, dk, dv


# deterministic by construction: dK/dV walk the inverse lists, no atomics
BACKEND = Backend('routed', 'triton', forward, backward, check_inputs=check_inputs, devices=('cuda',),
                  dtypes=_DTYPES, priority=20, probe=_triton.unavailable_reason)
if _triton.unavailable_reason(torch.device('cuda' if torch.cuda.is_available() else 'cpu')) is None:
    _kernels()  # Triton can run here: import the kernels now, never inside a torch.compile trace
