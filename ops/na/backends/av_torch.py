"""Pure-PyTorch neighbourhood weighted sum (``ops.na.na_av``), forward and backward, without unfolding the
neighbourhood: a recursion over the axes visits the window slots row-major, gathering the value map once per
(axis, slot) with ``index_select`` (a gather along axis ``a`` is shared by every slot that follows it), so memory
stays O(ndim x size of V) for any kernel size. The backward walks the same recursion and scatters ``w * dO``
back with ``index_add_`` (deterministic on CPU, and on CUDA under ``torch.use_deterministic_algorithms(True)``).

Centred sliding windows (``border='mask'``, stride 1, dilation 1, not causal: TransNeXt's) take a shortcut: every
slot is a constant shift, so V is zero-padded once and each slot is a view of it, accumulated in place
(``addcmul_``); the zero padding is the border mask.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..._registry import Backend
from ..pattern import NASpec, axis_neighbors

__all__ = ['BACKEND', 'forward', 'backward']


@lru_cache(maxsize=64)
def _axes(shape: tuple[int, ...], spec: NASpec, device: str) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per axis: the key index ``[k, L]`` of every slot and the slot's validity as a float ``[k, L]``."""
    out = []
    for axis, length in enumerate(shape):
        idx, ok = axis_neighbors(length, spec.kernel_size[axis], spec.stride[axis], spec.dilation[axis],
                                 spec.is_causal[axis], border=spec.border)
        out.append((idx.t().contiguous().to(device), ok.t().contiguous().to(device)))
    return tuple(out)


def _setup(v: torch.Tensor, spec: NASpec):
    compute = torch.float64 if v.dtype == torch.float64 else torch.float32
    shape = tuple(v.shape[1:-2])
    axes = _axes(shape, spec, str(v.device))
    strides = [math.prod(spec.kernel_size[a + 1:]) for a in range(len(shape))]
    return compute, axes, strides


def _valid(axes, a: int, j: int, ndim: int, dtype) -> torch.Tensor:
    """Validity of slot ``j`` on axis ``a``, broadcast over ``[B, *S, H]``."""
    return axes[a][1][j].to(dtype).view([1] + [-1 if i == a else 1 for i in range(ndim)] + [1])


def _shifts(spec: NASpec) -> bool:
    """Whether every window slot is a constant shift of the query (centred, masked, stride 1, dilation 1)."""
    return spec.border == 'mask' and not any(spec.is_causal) and all(s == 1 for s in spec.stride) and all(
        d == 1 for d in spec.dilation)


def _padded(x: torch.Tensor, spec: NASpec) -> torch.Tensor:
    """``[B, *S, H, D]`` zero-padded by ``k // 2`` before and ``k - 1 - k // 2`` after on every spatial axis."""
    pad = []
    for k in reversed(spec.kernel_size):
        pad += [k // 2, k - 1 - k // 2]
    return torch.nn.functional.pad(x, [0, 0, 0, 0] + pad)


def _slot_views(xp: torch.Tensor, shape: tuple[int, ...], spec: NASpec):
    """``(slot, view of the padded map shifted to that slot)``, row-major over the slots."""
    grids = torch.meshgrid(*(torch.arange(k) for k in spec.kernel_size), indexing='ij')
    offsets = torch.stack([g.reshape(-1) for g in grids], 1).tolist()
    for slot, off in enumerate(offsets):
        index = (slice(None),) + tuple(slice(o, o + n) for o, n in zip(off, shape))
        yield slot, xp[index]


def _shift_forward(w, v, spec, compute):
    shape = tuple(v.shape[1:-2])
    vp, wf = _padded(v.to(compute), spec), w.to(compute)
    out = torch.zeros(v.shape, dtype=compute, device=v.device)
    for slot, view in _slot_views(vp, shape, spec):
        out.addcmul_(view, wf[..., slot, None])
    return out.to(v.dtype)


def _shift_backward(grad_out, w, v, spec, compute):
    shape = tuple(v.shape[1:-2])
    vp, wf, do = _padded(v.to(compute), spec), w.to(compute), grad_out.to(compute)
    dvp = torch.zeros_like(vp)
    dw = torch.empty(w.shape, dtype=compute, device=w.device)
    for (slot, view), (_, dview) in zip(_slot_views(vp, shape, spec), _slot_views(dvp, shape, spec)):
        dw[..., slot] = (do * view).sum(-1)
        dview.addcmul_(do, wf[..., slot, None])
    index = (slice(None),) + tuple(slice(k // 2, k // 2 + n) for k, n in zip(spec.kernel_size, shape))
    return dw.to(w.dtype), dvp[index].to(v.dtype)


def forward(w: torch.Tensor, v: torch.Tensor, spec: NASpec) -> torch.Tensor:
    """``out [B, *S, H, Dv]``: ``out[q] = sum_slot w[q, slot] * v[key(q, slot)]`` over the valid slots."""
    with torch.no_grad():
        if _shifts(spec):
            return _shift_forward(w, v, spec, torch.float64 if v.dtype == torch.float64 else torch.float32)
        compute, axes, strides = _setup(v, spec)
        ndim = len(axes)
        wf = w.to(compute)
        out = torch.zeros(v.shape, dtype=compute, device=v.device)

        def visit(a: int, g: torch.Tensor, slot: int, mask):
            for j in range(axes[a][0].shape[0]):
                gj = g.index_select(1 + a, axes[a][0][j])
                m = _valid(axes, a, j, ndim, compute) if mask is None else mask * _valid(axes, a, j, ndim, compute)
                s = slot + j * strides[a]
                if a == ndim - 1:
                    out.add_(gj * (wf[..., s] * m)[..., None])
                else:
                    visit(a + 1, gj, s, m)

        visit(0, v.to(compute), 0, None)
        return out.to(v.dtype)


def backward(grad_out: torch.Tensor, w: torch.Tensor, v: torch.Tensor, spec: NASpec) -> tuple:
    """``(dw, dv)``; ``dw`` is 0 on invalid slots."""
    with torch.no_grad():
        if _shifts(spec):
            return _shift_backward(grad_out, w, v, spec, torch.float64 if v.dtype == torch.float64 else torch.float32)
        compute, axes, strides = _setup(v, spec)
        ndim = len(axes)
        wf, do = w.to(compute), grad_out.to(compute)
        dw = torch.empty(w.shape, dtype=compute, device=w.device)

        def visit(a: int, g: torch.Tensor, slot: int, mask) -> torch.Tensor:
            """Gradient w.r.t. ``g`` (V gathered along the axes before ``a``) of the slots below this prefix."""
            acc = torch.zeros_like(g)
            for j in range(axes[a][0].shape[0]):
                gj = g.index_select(1 + a, axes[a][0][j])
                m = _valid(axes, a, j, ndim, compute) if mask is None else mask * _valid(axes, a, j, ndim, compute)
                s = slot + j * strides[a]
                if a == ndim - 1:
                    dw[..., s] = (do * gj).sum(-1) * m
                    contrib = do * (wf[..., s] * m)[..., None]
                else:
                    contrib = visit(a + 1, gj, s, m)
                acc.index_add_(1 + a, axes[a][0][j], contrib)
            return acc

        dv = visit(0, v.to(compute), 0, None)
        return dw.to(w.dtype), dv.to(v.dtype)


BACKEND = Backend('na_av', 'torch', forward, backward, priority=10)
