"""The dense cross-attention backends, registered as op ``'dense'`` in :mod:`ops._registry`.

A backend is a module with (tensors ``[B, N, H, D]`` queries, ``[B, M, H, D]`` keys, ``[B, M, H, Dv]`` values;
``bias`` ``None`` or broadcastable to ``[B, H, N, M]``; inputs already share one dtype)::

    forward(q, k, v, bias, scale, return_lse) -> (out [B, N, H, Dv] in q.dtype, lse [B, N, H] or None)

differentiable through autograd (the op is a composite, not a custom op), and ``forward_with_dropout(q, k, v,
bias, scale, dropout_p) -> out`` when it declares ``dropout=True``. ``lse`` is float32 (float64 for float64
inputs); a query whose keys are all masked (bias ``-inf``) gets output 0 and lse ``-inf``.
"""
from __future__ import annotations

from ..._registry import register_backend

register_backend('dense', 'reference', 'ops.dense.backends.reference', auto=False, preload=True)
# deterministic: torch's SDPA dispatcher follows torch.use_deterministic_algorithms itself
register_backend('dense', 'sdpa', 'ops.dense.backends.sdpa', dropout=True, priority=10, preload=True)
