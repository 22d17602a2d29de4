"""Exact attention rows of chosen queries for neighborhood attention, and the recording glue of ``ops.na``.

:func:`attention_rows` computes, for a few query cells, the softmax the op computes — over each query's window
keys as :mod:`ops.na.pattern` defines them (window slots, dilation groups, strides, causal and border rules,
``valid_shape``), the rpb, the extra tokens, the scale — from the op's own inputs, gathering only those queries'
keys (O(P x window), never the N x N matrix the reference backend builds). :func:`av_rows` does the same for the
weights of :func:`ops.na_av`. ``record`` / ``record_av`` hand them to the active recording
(:mod:`ops.maps`); the op APIs call them only while one is active.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..maps import _recorder
from .pattern import NASpec, axis_neighbors

__all__ = ['attention_rows', 'av_rows', 'window_keys']


def window_keys(spec: NASpec, shape, cells: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The window of each query cell (``cells [P, ndim]``, long): flat row-major key indices ``[P, K]``, their
    validity ``[P, K]`` (slot order of :mod:`ops.na.pattern`, ``K = prod(kernel_size)``) and per axis the key
    coordinate ``[P, K]``."""
    flat = valid = None
    coords: list[Tensor] = []
    for axis, length in enumerate(shape):
        idx, ok = axis_neighbors(length, spec.kernel_size[axis], spec.stride[axis], spec.dilation[axis],
                                 spec.is_causal[axis], cells.device, spec.border)
        idx, ok = idx[cells[:, axis]], ok[cells[:, axis]]  # [P, k_a]
        if spec.valid_shape is not None:
            ok = ok & (idx < spec.valid_shape[axis])
        if flat is None:
            flat, valid = idx, ok
            coords = [idx]
        else:
            k = idx.shape[1]
            flat = (flat[:, :, None] * length + idx[:, None, :]).flatten(1)
            valid = (valid[:, :, None] & ok[:, None, :]).flatten(1)
            coords = [c.repeat_interleave(k, 1) for c in coords] + [idx.repeat(1, flat.shape[1] // k)]
    return flat, valid, coords


def _flat_cells(cells: Tensor, shape) -> Tensor:
    flat = torch.zeros(cells.shape[0], dtype=torch.long, device=cells.device)
    for axis, length in enumerate(shape):
        flat = flat * length + cells[:, axis]
    return flat


def _scatter(weights: Tensor, flat: Tensor, valid: Tensor, n: int) -> Tensor:
    """``weights [B, P, h, K]`` at key indices ``flat [P, K]`` -> ``[B, P, h, n]`` (invalid slots dropped)."""
    b, p, h, _ = weights.shape
    out = weights.new_zeros(b, p, h, n)
    index = flat[None, :, None, :].expand(b, p, h, -1)
    return out.scatter_add_(-1, index, torch.where(valid[None, :, None, :], weights, 0))


def attention_rows(query: Tensor, key: Tensor, spec: NASpec, scale: float, rpb: Tensor | None,
                   additional_keys: Tensor | None, cells: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """The attention probabilities of the queries at ``cells`` (``[P, ndim]`` grid coordinates, long).

    Args as :func:`ops.na.neighborhood_attention` (``query, key [B, *S, heads, D]``). Returns ``(probs
    [B, P, heads, *S], extra [B, P, heads, E] or None, lse [B, P, heads])``, in float64 for float64 inputs and
    float32 otherwise; a query that sees no key gets zeros and lse ``-inf`` (as the reference backend).
    """
    shape = tuple(query.shape[1:-2])
    b, h, d = query.shape[0], query.shape[-2], query.shape[-1]
    compute = torch.float64 if query.dtype == torch.float64 else torch.float32
    cells = cells.to(query.device)
    flat, valid, coords = window_keys(spec, shape, cells)
    n = math.prod(shape)
    q = query.reshape(b, n, h, d)[:, _flat_cells(cells, shape)].to(compute)  # [B, P, h, D]
    k = key.reshape(b, n, h, d)[:, flat].to(compute)  # [B, P, K, h, D]
    logits = torch.einsum('bphd,bpkhd->bphk', q, k) * scale
    if rpb is not None:
        rel = [torch.div(c - cells[:, a, None], spec.dilation[a], rounding_mode='floor') + spec.kernel_size[a] - 1
               for a, c in enumerate(coords)]
        logits = logits + rpb.to(compute)[(slice(None), *rel)].permute(1, 0, 2)  # [h, P, K] -> [P, h, K]
    logits = logits.masked_fill(~valid[None, :, None, :], float('-inf'))
    if additional_keys is not None:
        extra_k = additional_keys.to(compute).expand(b, -1, -1, -1)
        logits = torch.cat([logits, torch.einsum('bphd,behd->bphe', q, extra_k) * scale], -1)
    seen = torch.isfinite(logits).any(-1)
    lse = torch.where(seen, torch.logsumexp(torch.where(seen[..., None], logits, 0), -1), float('-inf'))
    probs = torch.where(seen[..., None], torch.exp(logits - torch.where(seen, lse, 0)[..., None]), 0)
    window = flat.shape[1]
    rows = _scatter(probs[..., :window], flat, valid, n).reshape(b, -1, h, *shape)
    return rows, (probs[..., window:] if additional_keys is not None else None), lse


def av_rows(weights: Tensor, spec: NASpec, cells: Tensor) -> Tensor:
    """:func:`ops.na_av`'s weights of the queries at ``cells``, placed on their window keys: ``[B, P, heads, *S]``
    (slots outside the map, ``border='mask'``, dropped as the op drops them)."""
    shape = tuple(weights.shape[1:-2])
    b, h = weights.shape[0], weights.shape[-2]
    compute = torch.float64 if weights.dtype == torch.float64 else torch.float32
    cells = cells.to(weights.device)
    flat, valid, _ = window_keys(spec, shape, cells)
    n = math.prod(shape)
    w = weights.reshape(b, n, h, -1)[:, _flat_cells(cells, shape)].to(compute)
    return _scatter(w, flat, valid, n).reshape(b, -1, h, *shape)


def _kind(spec: NASpec, shape) -> str:
    """A label for the pattern: window (blocked: one window per block, or the whole axis), grid (dilated windows
    spanning the axis), dilated, strided, causal or neighborhood."""
    if any(spec.is_causal):
        return 'causal'
    ks, st, dl = spec.kernel_size, spec.stride, spec.dilation
    if all(d == 1 and (k == s or k == n) for k, s, d, n in zip(ks, st, dl, shape)):
        return 'window'
    if any(d > 1 for d in dl):
        spans = all(d == 1 or k * d == n for k, d, n in zip(ks, dl, shape))
        return 'grid' if spans and all(s == 1 for s in st) else 'dilated'
    return 'strided' if any(s > 1 for s in st) else 'neighborhood'


def record(query: Tensor, key: Tensor, spec: NASpec, scale: float, rpb: Tensor | None,
           additional_keys: Tensor | None, token_grid) -> None:
    """Give the active recording this call's rows (the op binds its returned lse after, for merges)."""
    rec = _recorder.current('neighborhood_attention')
    frame = tuple(query.shape[1:-2])
    grid = rec.map_grid(token_grid, frame, 'neighborhood_attention')
    cells, covered = rec.frame_queries(grid, frame)
    with torch.no_grad():
        rows, extra, row_lse = attention_rows(query, key, spec, scale, rpb, additional_keys, cells)
    segments = rec.grid_segments(grid, frame, rows)
    if extra is not None:
        segments['extra'] = extra
    rec.add(_recorder._Partial(_kind(spec, frame), grid.shape, covered, segments, row_lse))


def record_av(weights: Tensor, spec: NASpec) -> None:
    """Give the active recording :func:`ops.na_av`'s weights of the chosen queries (kind ``'na_av'``)."""
    rec = _recorder.current('na_av')
    frame = tuple(weights.shape[1:-2])
    grid = rec.map_grid(None, frame, 'na_av')
    cells, covered = rec.frame_queries(grid, frame)
    with torch.no_grad():
        rows = av_rows(weights, spec, cells)
    rec.add(_recorder._Partial('na_av', grid.shape, covered, rec.grid_segments(grid, frame, rows), None, False))
