"""``torch.library`` registration of routed attention, so ``torch.compile`` sees one opaque node.

``attnzoo::routed_forward`` / ``routed_backward`` take the index tensor ``[B, R, topk]`` (int64) as an input and
call the named backend; fake implementations give ``torch.compile(fullgraph=True)`` the output shapes, and
:func:`torch.library.register_autograd` wires the backward (no gradient for the indices). The indices' range is
checked inside the op, on real tensors, so it holds compiled too (not inside CUDA-graph capture). The autocast
rule of :mod:`ops._checks` is registered on the forward's Autocast keys (the int64 indices are left alone).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import autocast_off, register_autocast
from .._registry import get_backend
from .regions import region_grid

__all__ = ['routed_forward', 'routed_backward']


def _lse_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _check_range(indices: Tensor, n_regions: int) -> None:
    """Indices out of range raise. On CUDA this reads one bool back (a host sync), skipped while a CUDA graph is
    being captured (a sync would break the capture)."""
    if indices.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    if indices.numel() and bool(((indices < 0) | (indices >= n_regions)).any()):
        lo, hi = int(indices.min()), int(indices.max())
        raise ValueError(f'indices must be region numbers in [0, {n_regions}) (n_win x n_win regions), got values '
                         f'in [{lo}, {hi}]')


def _valid(valid_shape: list[int] | None) -> tuple[int, int] | None:
    return None if valid_shape is None else (int(valid_shape[0]), int(valid_shape[1]))


@torch.library.custom_op('attnzoo::routed_forward', mutates_args=())
def routed_forward(query: Tensor, key: Tensor, value: Tensor, indices: Tensor, n_win: list[int], scale: float,
                   valid_shape: list[int] | None, backend: str) -> tuple[Tensor, Tensor]:
    """Routed attention forward on backend ``backend``: ``(out [B, H, W, heads, Dv], lse [B, H, W, heads])``."""
    grid = region_grid(query.shape[1], query.shape[2], tuple(n_win))
    _check_range(indices, grid.n_regions)
    with autocast_off(query.device.type):
        out, lse = get_backend('routed', backend).forward(query, key, value, indices, grid, scale,
                                                          _valid(valid_shape))
    return out.contiguous(), lse.to(_lse_dtype(query)).contiguous()


@routed_forward.register_fake
def _(query, key, value, indices, n_win, scale, valid_shape, backend):
    return (query.new_empty(*query.shape[:-1], value.shape[-1]),
            query.new_empty(query.shape[:-1], dtype=_lse_dtype(query)))


@torch.library.custom_op('attnzoo::routed_backward', mutates_args=())
def routed_backward(grad_out: Tensor, grad_lse: Tensor | None, query: Tensor, key: Tensor, value: Tensor,
                    out: Tensor, lse: Tensor, indices: Tensor, n_win: list[int], scale: float,
                    valid_shape: list[int] | None, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv)``."""
    grid = region_grid(query.shape[1], query.shape[2], tuple(n_win))
    with autocast_off(query.device.type):
        grads = get_backend('routed', backend).backward(grad_out, query, key, value, out, lse, indices, grid, scale,
                                                        _valid(valid_shape), grad_lse=grad_lse)
    # custom ops may not return aliases of inputs or of each other
    seen = {t.untyped_storage().data_ptr() for t in (grad_out, query, key, value, out, lse)}
    result = []
    for g in grads:
        g = g.contiguous()
        if g.untyped_storage().data_ptr() in seen:
            g = g.clone()
        seen.add(g.untyped_storage().data_ptr())
        result.append(g)
    return tuple(result)


@routed_backward.register_fake
def _(grad_out, grad_lse, query, key, value, out, lse, indices, n_win, scale, valid_shape, backend):
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, indices, n_win, scale, valid_shape, backend = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, indices)
    ctx.args = (n_win, scale, valid_shape, backend)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, indices = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = routed_backward(grad_out, grad_lse, q, k, v, out, lse, indices, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


torch.library.register_autograd('attnzoo::routed_forward', _backward, setup_context=_setup_context)
register_autocast('attnzoo::routed_forward')
