"""The dense cross-attention backends, registered as op ``'dense'`` in :mod:`ops._registry`.

A backend is a module ending with its :class:`ops._registry.Backend` record ``BACKEND``, whose entry points
are (tensors ``[B, N, H, D]`` queries, ``[B, M, H, D]`` keys, ``[B, M, H, Dv]`` values;
``bias`` ``None`` or broadcastable to ``[B, H, N, M]``; inputs already share one dtype)::

    forward(q, k, v, bias, scale, return_lse) -> (out [B, N, H, Dv] in q.dtype, lse [B, N, H] or None)

differentiable through autograd (the op is a composite, not a custom op), and ``forward_with_dropout(q, k, v,
bias, scale, dropout_p) -> out`` when it declares ``dropout=True``. ``lse`` is float32 (float64 for float64
inputs); a query whose keys are all masked (bias ``-inf``) gets output 0 and lse ``-inf``.
"""
from __future__ import annotations

from ..._registry import register_backend
from . import reference, sdpa

register_backend(reference.BACKEND)
register_backend(sdpa.BACKEND)
