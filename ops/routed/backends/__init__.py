"""The routed-attention backends, registered as op ``'routed'`` in :mod:`ops._registry`.

A backend is a module with (``q``, ``k`` ``[B, H, W, heads, D]``, ``v`` ``[B, H, W, heads, Dv]``, one dtype;
``indices`` int64 ``[B, R, topk]`` in range; ``grid`` an :class:`ops.routed.regions.RegionGrid`; ``valid_shape``
``None`` or ``(rows, cols)`` of unmasked keys)::

    forward(q, k, v, indices, grid, scale, valid_shape) -> (out [B, H, W, heads, Dv] in q.dtype, lse [B, H, W, heads])
    backward(grad_out, q, k, v, out, lse, indices, grid, scale, valid_shape, grad_lse=None) -> (dq, dk, dv)

and optionally ``check_inputs(q, k, v, indices, grid)`` raising for a request it cannot serve. ``lse`` is float32
(float64 for float64 inputs); a query whose keys are all masked gets output 0 and lse ``-inf``. ``grad_lse``
enters the backward as ``delta = rowsum(dO * O) - grad_lse``.
"""
from __future__ import annotations

import torch

from ... import _triton
from ..._registry import register_backend

register_backend('routed', 'reference', 'ops.routed.backends.reference', auto=False, preload=True)
register_backend('routed', 'torch', 'ops.routed.backends.torch_routed', priority=10, preload=True)
# deterministic by construction: dK/dV walk the inverse lists, no atomics
register_backend('routed', 'triton', 'ops.routed.backends.triton_routed', devices=('cuda',),
                 dtypes=(torch.float16, torch.bfloat16, torch.float32), priority=20,
                 probe=_triton.unavailable_reason,
                 preload=_triton.unavailable_reason(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
                 is None)
