"""The torch backend of linear attention: the ``[B, H, D, Dv]`` state ``phi(k)^T v`` and the ``[B, H, D]``
normaliser ``sum phi(k)`` first, then one matmul per query: O(N D Dv) time, O(N + D Dv) extra memory.

Everything runs in float32 (float64 for float64) whatever the input dtype: the state and the normaliser each sum
N terms, and at detection resolution (N ~ 65k tokens at stride 4 of a 1024^2 image) a bf16 sum loses the
result (tests/test_ops_linear.py measures it); the output returns in the input dtype.
"""
from __future__ import annotations

import torch

from ..._registry import Backend
from ._common import feature, reweight, rotate, state_scale

__all__ = ['BACKEND', 'forward']


def forward(q, k, v, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale):
    """``out [B, N, H, Dv]`` in ``q.dtype``."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf = feature(q.to(acc), feature_map), feature(k.to(acc), feature_map)
    if key_reweight:
        kf = reweight(qf, kf)
    state = torch.einsum('bnhd,bnhe->bhde', rotate(kf, sin, cos), v.to(acc))
    num = torch.einsum('bnhd,bhde->bnhe', rotate(qf, sin, cos), state)
    ksum = kf.mean(1) if key_reduce == 'mean' else kf.sum(1)
    den = torch.einsum('bnhd,bhd->bnh', qf, ksum) + eps
    if clamp_min is not None:
        den = den.clamp(min=clamp_min)
    return (num * state_scale(scale, q.shape[2], acc) / den[..., None]).to(q.dtype)


def forward_inline(q, k, v, feature_map, scale):
    """InLine attention, ``out [B, N, H, Dv]`` in ``q.dtype``, in the official order: the state
    ``phi(k)^T v * scale / N``, then ``phi(q) state + (1 - scale * phi(q) . mean phi(k)) mean v``."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf, vf = feature(q.to(acc), feature_map), feature(k.to(acc), feature_map), v.to(acc)
    n = k.shape[1]
    state = torch.einsum('bnhd,bnhe->bhde', kf, vf) * (scale / n)
    num = torch.einsum('bnhd,bhde->bnhe', qf, state)
    correction = 1 - torch.einsum('bnhd,bhd->bnh', qf, kf.mean(1)) * scale
    return (num + correction[..., None] * vf.mean(1)[:, None]).to(q.dtype)


BACKEND = Backend('linear', 'torch', forward, extra={'forward_inline': forward_inline}, priority=10)
