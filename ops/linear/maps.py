"""The implied attention weights of chosen queries for linear attention, and the recording glue of ``ops.linear``.

Linear attention has no softmax, but its output is still an exact weighted sum of the values:
``out_i = sum_j w_ij v_j`` with, for :func:`ops.linear_attention`'s two normalisers,

* ``'divide'``: ``w_ij = scale * rope(q'_i) . rope(k'_j) / max(q'_i . reduce(k') + eps, clamp_min)`` (``q' =
  phi(q)``, ``k' = phi(k)`` after RALA's re-weighting). With a non-negative feature map and no RoPE the weights are
  non-negative and sum to ``scale * den / max(den, clamp_min)`` (L2ViT: ``temperature`` where the clamp is not hit);
  RoPE rotates the numerator only, so RALA's weights can be negative and sum to about 1, not exactly;
* ``'inline'``: ``w_ij = 1/N + scale/N * q'_i . (k'_j - mean(k'))``: rows sum to exactly 1, weights can be negative.

:func:`attention_rows` computes these rows for a few queries (``P x N``; the reference backend's oracle is the full
``N x N`` matrix of :func:`ops.linear.backends.reference.weights`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..maps import _recorder
from .backends._common import feature, reweight, rotate, state_scale

__all__ = ['attention_rows']


def attention_rows(query: Tensor, key: Tensor, feature_map: str, key_reweight: bool, sin: Tensor | None,
                   cos: Tensor | None, key_reduce: str, eps: float, clamp_min: float | None, scale,
                   normalizer: str, index: Tensor) -> Tensor:
    """The implied weights ``[B, P, heads, N]`` of the query tokens ``index`` (``[P]``, long); args as
    :func:`ops.linear_attention`. float64 for float64 inputs, float32 otherwise."""
    compute = torch.float64 if query.dtype == torch.float64 else torch.float32
    index = index.to(query.device)
    qf, kf = feature(query.to(compute), feature_map), feature(key.to(compute), feature_map)
    n, h = key.shape[1], key.shape[2]
    if normalizer == 'inline':
        centred = kf - kf.mean(1, keepdim=True)
        return 1.0 / n + torch.einsum('bphd,bmhd->bphm', qf[:, index], centred) * (scale / n)
    if key_reweight:
        kf = reweight(qf, kf)
    sin_, cos_ = (None, None) if sin is None else (sin.to(compute), cos.to(compute))
    rq = rotate(qf, sin_, cos_)[:, index]
    num = torch.einsum('bphd,bmhd->bphm', rq, rotate(kf, sin_, cos_))
    den = torch.einsum('bphd,bhd->bph', qf[:, index], kf.sum(1)) / (n if key_reduce == 'mean' else 1) + eps
    if clamp_min is not None:
        den = den.clamp(min=clamp_min)
    return num * state_scale(scale, h, compute) / den[..., None]  # a per-head scale is [heads, 1]: (h, N) axes


def record(query: Tensor, key: Tensor, feature_map: str, key_reweight: bool, sin, cos, key_reduce: str, eps: float,
           clamp_min, scale, normalizer: str, token_grid) -> None:
    """Give the active recording this call's implied weights (kind ``'linear'``, not normalized)."""
    op = 'linear_attention'
    rec = _recorder.current(op)
    q_grid, k_grid = rec.flat_grids(token_grid, query.shape[1], key.shape[1], op)
    if isinstance(q_grid, str) or isinstance(k_grid, str):
        raise ValueError(f'{op}: token sets ({q_grid!r}, {k_grid!r}) are for softmax attentions; linear attention '
                         f'takes token grids')
    rec.check_batch(query.shape[0], op)
    with torch.no_grad():
        rows = attention_rows(query, key, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale,
                              normalizer, rec.flat_queries(q_grid, query.shape[1]))
        segments, _ = rec.flat_segments(k_grid, rows, op)
    rec.add(_recorder._Partial('linear', q_grid.shape, torch.ones(rows.shape[1], dtype=torch.bool), segments, None,
                               False))
