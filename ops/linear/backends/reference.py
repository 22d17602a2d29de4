"""Reference backend of linear attention, the test oracle: float64, the N x N kernel matrix ``phi(q) phi(k)^T``
first (quadratic; the order the torch backend avoids), then the row normaliser."""
from __future__ import annotations

import torch

from ._common import feature, reweight, rotate, state_scale

__all__ = ['forward']


def forward(q, k, v, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale):
    """``out [B, N, H, Dv]`` in ``q.dtype``."""
    f64 = torch.float64
    qf, kf, vf = feature(q.to(f64), feature_map), feature(k.to(f64), feature_map), v.to(f64)
    if key_reweight:
        kf = reweight(qf, kf)
    sin64 = None if sin is None else sin.to(f64)
    cos64 = None if cos is None else cos.to(f64)
    kernel = torch.einsum('bnhd,bmhd->bhnm', rotate(qf, sin64, cos64), rotate(kf, sin64, cos64))
    num = torch.einsum('bhnm,bmhe->bnhe', kernel, vf)
    n = k.shape[1]
    # the normaliser from the un-rotated features: q . sum_m k_m (or the mean), summed explicitly per pair
    den = torch.einsum('bnhd,bmhd->bnh', qf, kf) / (n if key_reduce == 'mean' else 1) + eps
    if clamp_min is not None:
        den = den.clamp(min=clamp_min)
    return (num * state_scale(scale, q.shape[2], f64) / den[..., None]).to(q.dtype)


def forward_inline(q, k, v, feature_map, scale):
    """InLine attention, ``out [B, N, H, Dv]`` in ``q.dtype``: the explicit N x N weights
    ``1/N + scale/N * phi(q_i) . (phi(k_j) - mean_j phi(k_j))`` (each row sums to 1), times v."""
    f64 = torch.float64
    qf, kf, vf = feature(q.to(f64), feature_map), feature(k.to(f64), feature_map), v.to(f64)
    n = k.shape[1]
    weights = 1.0 / n + torch.einsum('bnhd,bmhd->bhnm', qf, kf - kf.mean(1, keepdim=True)) * (scale / n)
    return torch.einsum('bhnm,bmhe->bnhe', weights, vf).to(q.dtype)
