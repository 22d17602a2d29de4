"""Exact attention rows of chosen queries for routed attention (BiFormer), and the recording glue of ``ops.routed``.

:func:`attention_rows` computes, for a few query cells, the softmax :func:`ops.routed_attention` computes: over all
tokens of the ``topk`` key regions the query's region routed to (:mod:`ops.routed.regions`' partition; a region
listed twice counts twice, as in the reference backend and the official gather), keys beyond ``valid_shape``
masked, from the op's own q / k / indices / scale. It gathers only those queries' routed keys (O(P x topk x region
size)).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..maps import _recorder
from .regions import RegionGrid

__all__ = ['attention_rows']


def attention_rows(query: Tensor, key: Tensor, indices: Tensor, grid: RegionGrid, scale: float, valid_shape,
                   cells: Tensor) -> tuple[Tensor, Tensor]:
    """``(probs [B, P, heads, H, W], lse [B, P, heads])`` of the queries at ``cells`` (``[P, 2]`` (row, col),
    long); args as :func:`ops.routed_attention`. float64 for float64 inputs, float32 otherwise."""
    b, hh, ww, h, d = query.shape
    compute = torch.float64 if query.dtype == torch.float64 else torch.float32
    cells = cells.to(query.device)
    region = (cells[:, 0] // grid.rh) * grid.n_w + cells[:, 1] // grid.rw  # [P]
    routed = indices[:, region]  # [B, P, topk]
    offset = torch.arange(grid.region_size, device=query.device)
    rows = (routed // grid.n_w)[..., None] * grid.rh + offset // grid.rw  # [B, P, topk, S]
    cols = (routed % grid.n_w)[..., None] * grid.rw + offset % grid.rw
    flat = (rows * ww + cols).flatten(2)  # [B, P, K]
    batch = torch.arange(b, device=query.device)[:, None, None]
    q = query.reshape(b, -1, h, d)[:, cells[:, 0] * ww + cells[:, 1]].to(compute)  # [B, P, h, D]
    k = key.reshape(b, -1, h, d)[batch, flat].to(compute)  # [B, P, K, h, D]
    logits = torch.einsum('bphd,bpkhd->bphk', q, k) * scale
    if valid_shape is not None:
        valid = ((rows < valid_shape[0]) & (cols < valid_shape[1])).flatten(2)
        logits = logits.masked_fill(~valid[:, :, None], float('-inf'))
    seen = torch.isfinite(logits).any(-1)
    lse = torch.where(seen, torch.logsumexp(torch.where(seen[..., None], logits, 0), -1), float('-inf'))
    probs = torch.where(seen[..., None], torch.exp(logits - torch.where(seen, lse, 0)[..., None]), 0)
    out = probs.new_zeros(b, probs.shape[1], h, hh * ww)
    out.scatter_add_(-1, flat[:, :, None].expand(-1, -1, h, -1), probs)
    return out.reshape(b, -1, h, hh, ww), lse


def record(query: Tensor, key: Tensor, indices: Tensor, grid: RegionGrid, scale: float, valid_shape, token_grid,
           lse: Tensor | None) -> None:
    """Give the active recording this call's rows (``lse``: the log-sum-exp the op returned, if it did)."""
    rec = _recorder.current('routed_attention')
    frame = tuple(query.shape[1:3])
    map_grid = rec.map_grid(token_grid, frame, 'routed_attention')
    cells, covered = rec.frame_queries(map_grid, frame)
    with torch.no_grad():
        rows, row_lse = attention_rows(query, key, indices, grid, scale, valid_shape, cells)
    rec.add(_recorder._Partial('routed', map_grid.shape, covered, rec.grid_segments(map_grid, frame, rows), row_lse),
            lse)
