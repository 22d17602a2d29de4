"""Reference backend of linear attention, the test oracle: float64, the N x N matrix of implied weights first
(quadratic: ``phi(q) phi(k)^T`` and the row normaliser; the order the torch backend avoids), then times v."""
from __future__ import annotations

import torch

from ..._registry import Backend
from ._common import feature, reweight, rotate, state_scale

__all__ = ['BACKEND', 'forward', 'forward_inline', 'weights', 'inline_weights']


def weights(q, k, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale) -> torch.Tensor:
    """The implied weights ``[B, H, N, N]`` (float64): ``out_i = sum_j w_ij v_j``."""
    f64 = torch.float64
    qf, kf = feature(q.to(f64), feature_map), feature(k.to(f64), feature_map)
    if key_reweight:
        kf = reweight(qf, kf)
    sin64 = None if sin is None else sin.to(f64)
    cos64 = None if cos is None else cos.to(f64)
    kernel = torch.einsum('bnhd,bmhd->bhnm', rotate(qf, sin64, cos64), rotate(kf, sin64, cos64))
    n = k.shape[1]
    # the normaliser from the un-rotated features: q . sum_m k_m (or the mean), summed explicitly per pair
    den = torch.einsum('bnhd,bmhd->bhn', qf, kf) / (n if key_reduce == 'mean' else 1) + eps
    if clamp_min is not None:
        den = den.clamp(min=clamp_min)
    scale = state_scale(scale, q.shape[2], f64)
    return kernel * (scale[..., None] if isinstance(scale, torch.Tensor) else scale) / den[..., None]


def forward(q, k, v, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale):
    """``out [B, N, H, Dv]`` in ``q.dtype``."""
    w = weights(q, k, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale)
    return torch.einsum('bhnm,bmhe->bnhe', w, v.to(torch.float64)).to(q.dtype)


def inline_weights(q, k, feature_map, scale) -> torch.Tensor:
    """InLine's explicit weights ``[B, H, N, N]`` (float64): ``1/N + scale/N * phi(q_i) . (phi(k_j) - mean_j
    phi(k_j))``, each row summing to 1."""
    f64 = torch.float64
    qf, kf = feature(q.to(f64), feature_map), feature(k.to(f64), feature_map)
    n = k.shape[1]
    return 1.0 / n + torch.einsum('bnhd,bmhd->bhnm', qf, kf - kf.mean(1, keepdim=True)) * (scale / n)


def forward_inline(q, k, v, feature_map, scale):
    """InLine attention, ``out [B, N, H, Dv]`` in ``q.dtype``."""
    return torch.einsum('bhnm,bmhe->bnhe', inline_weights(q, k, feature_map, scale), v.to(torch.float64)).to(q.dtype)


BACKEND = Backend('linear', 'reference', forward, extra={'forward_inline': forward_inline}, auto=False)
