"""The linear-attention backends, registered as op ``'linear'`` in :mod:`ops._registry`.

A backend is a module ending with its :class:`ops._registry.Backend` record ``BACKEND``, whose entry points
are (``q``, ``k`` ``[B, N, H, D]``, ``v`` ``[B, N, H, Dv]``, one dtype; ``sin``/``cos``
``None`` or ``[N, D]``; ``scale`` a float or a ``[H]`` tensor; the rest as :func:`ops.linear_attention`)::

    forward(q, k, v, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale) -> out [B, N, H, Dv]
    extra['forward_inline'](q, k, v, feature_map, scale) -> out [B, N, H, Dv]   (normalizer='inline', InLine)

differentiable through autograd, returning ``q.dtype`` and computing in float32 (float64 for float64 inputs) or
wider whatever the input dtype.
"""
from __future__ import annotations

from ..._registry import register_backend
from . import reference, torch_linear

register_backend(reference.BACKEND)
register_backend(torch_linear.BACKEND)
