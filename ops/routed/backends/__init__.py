"""The routed-attention backends, registered as op ``'routed'`` in :mod:`ops._registry`.

A backend is a module ending with its :class:`ops._registry.Backend` record ``BACKEND``, whose entry points
are (``q``, ``k`` ``[B, H, W, heads, D]``, ``v`` ``[B, H, W, heads, Dv]``, one dtype;
``indices`` int64 ``[B, R, topk]`` in range; ``grid`` an :class:`ops.routed.regions.RegionGrid`; ``valid_shape``
``None`` or ``(rows, cols)`` of unmasked keys)::

    forward(q, k, v, indices, grid, scale, valid_shape) -> (out [B, H, W, heads, Dv] in q.dtype, lse [B, H, W, heads])
    backward(grad_out, q, k, v, out, lse, indices, grid, scale, valid_shape, grad_lse=None) -> (dq, dk, dv)

and optionally ``check_inputs(q, k, v, indices, grid)`` raising for a request it cannot serve. ``lse`` is float32
(float64 for float64 inputs); a query whose keys are all masked gets output 0 and lse ``-inf``. ``grad_lse``
enters the backward as ``delta = rowsum(dO * O) - grad_lse``.
"""
from __future__ import annotations

from ..._registry import register_backend
from . import reference, torch_routed, triton_routed

register_backend(reference.BACKEND)
register_backend(torch_routed.BACKEND)
register_backend(triton_routed.BACKEND)  # imports no Triton until Triton can run (ops._registry)
