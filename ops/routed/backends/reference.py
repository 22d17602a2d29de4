"""Brute-force reference backend of routed attention: dense ``[N, N]`` logits with the routing as a mask.

Every query may see every key of the regions its region routed to; a region listed twice counts twice (the
official gather concatenates the listed regions), so the mask is ``log(multiplicity)`` added to the logits
(``-inf`` for regions not listed). Computes in float64 whatever the input dtype; memory is O(N^2): the oracle of
the tests, not a path for training.
"""
from __future__ import annotations

import torch

from ..._registry import Backend
from ..regions import RegionGrid, from_regions, to_regions, valid_tokens

__all__ = ['BACKEND', 'forward', 'backward']


def _key_bias(indices: torch.Tensor, grid: RegionGrid, valid_shape, dtype) -> torch.Tensor:
    """``[B, 1, N, N]`` additive logit bias in region-major token order: log multiplicity, -inf where masked."""
    b, r, _ = indices.shape
    s = grid.region_size
    count = torch.zeros(b, r, r, dtype=dtype, device=indices.device)
    count.scatter_add_(2, indices, torch.ones(indices.shape, dtype=dtype, device=indices.device))
    bias = count.log().repeat_interleave(s, 1).repeat_interleave(s, 2)  # [B, N, N]
    if valid_shape is not None:
        bias = bias.masked_fill(~valid_tokens(grid, valid_shape, indices.device).reshape(-1), float('-inf'))
    return bias[:, None]


def _probs(q, k, indices, grid, scale, valid_shape):
    f64 = torch.float64
    qf, kf = to_regions(q, grid, f64).flatten(2, 3), to_regions(k, grid, f64).flatten(2, 3)  # [B, H, N, D]
    logits = qf @ kf.transpose(-1, -2) * scale + _key_bias(indices, grid, valid_shape, f64)
    seen = torch.isfinite(logits).any(-1)  # a query whose keys are all masked: output 0, lse -inf
    lse = torch.where(seen, torch.logsumexp(torch.where(seen[..., None], logits, 0), -1), float('-inf'))
    probs = torch.where(seen[..., None], torch.exp(logits - torch.where(seen, lse, 0)[..., None]), 0)
    return probs, lse, qf, kf


def _grid_out(x: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """``[B, H, N, D]`` region-major -> ``[B, H, W, heads, D]``."""
    return from_regions(x.unflatten(2, (grid.n_regions, grid.region_size)), grid)


def forward(q, k, v, indices, grid: RegionGrid, scale: float, valid_shape=None):
    """``(out [B, H, W, heads, Dv] in q.dtype, lse [B, H, W, heads])``; lse float32 (float64 for float64)."""
    probs, lse, _, _ = _probs(q, k, indices, grid, scale, valid_shape)
    out = probs @ to_regions(v, grid, torch.float64).flatten(2, 3)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return _grid_out(out, grid).to(q.dtype), _grid_out(lse[..., None], grid)[..., 0].to(lse_dtype)


def backward(grad_out, q, k, v, out, lse, indices, grid: RegionGrid, scale: float, valid_shape=None,
             grad_lse=None):
    """``(dq, dk, dv)`` from the recomputed dense probabilities (explicit math: custom-op kernels run below
    autograd)."""
    with torch.no_grad():
        probs, _, qf, kf = _probs(q, k, indices, grid, scale, valid_shape)
        vf = to_regions(v, grid, torch.float64).flatten(2, 3)
        dof = to_regions(grad_out, grid, torch.float64).flatten(2, 3)
        delta = (dof * (probs @ vf)).sum(-1, keepdim=True)
        if grad_lse is not None:
            delta = delta - to_regions(grad_lse[..., None], grid, torch.float64).flatten(2, 3)
        ds = probs * (dof @ vf.transpose(-1, -2) - delta)
        dq = _grid_out(ds @ kf * scale, grid).to(q.dtype)
        dk = _grid_out(ds.transpose(-1, -2) @ qf * scale, grid).to(k.dtype)
        dv = _grid_out(probs.transpose(-1, -2) @ dof, grid).to(v.dtype)
    return dq, dk, dv


BACKEND = Backend('routed', 'reference', forward, backward, auto=False)
