"""Public functional API of bi-level routing attention (BiFormer): :func:`region_routing` picks the top-k key
regions of every query region, :func:`routed_attention` attends every query over its region's routed regions.

Every argument is validated here, once, with errors that name it (shared wording: :mod:`ops._checks`); the
attention then runs as the custom op ``attnzoo::routed_forward`` on the backend
:func:`ops._registry.resolve_backend` picks.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import autocast_inputs, check_compatible, check_flag, check_scale, check_tensor, spatial_sizes
from .._registry import resolve_backend
from ..maps import _recorder
from . import backends as _backends  # noqa: F401  (registers the backends)
from . import custom_op as _custom_op  # noqa: F401  (registers attnzoo::routed_forward)
from . import maps as _maps
from .regions import RegionGrid, region_grid, to_regions, valid_tokens

__all__ = ['region_routing', 'routed_attention', 'region_means']


def _check_topk(topk, n_regions: int) -> None:
    if isinstance(topk, bool) or not isinstance(topk, numbers.Integral) or not 1 <= topk <= n_regions:
        raise ValueError(f'topk must be an int in [1, n_regions={n_regions}], got {topk!r}')


def region_means(x: Tensor, grid: RegionGrid, valid_shape: Sequence[int] | None = None) -> Tensor:
    """Mean of ``x [B, H, W, C]`` over each region: ``[B, R, C]`` (BiFormer's region descriptors); with
    ``valid_shape``, over the region's real tokens only (0 for a region of padding alone)."""
    tokens = to_regions(x[:, :, :, None], grid)[:, 0]  # [B, R, S, C]
    if valid_shape is None:
        return tokens.mean(2)
    valid = valid_tokens(grid, valid_shape, x.device)
    return (tokens * valid[..., None]).sum(2) / valid.sum(1).clamp(min=1)[:, None]


def region_routing(query: Tensor, key: Tensor, n_win: int | Sequence[int], topk: int, *,
                   diff_routing: bool = False, scale: float | None = None,
                   valid_shape: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """BiFormer's region-level routing (its ``TopkRouting`` on the region means): the ``topk`` key regions of every
    query region.

    Args:
        query, key: ``[batch, H, W, C]``, all channels (the routing is shared by the heads).
        n_win: regions per side (int, or ``(n_h, n_w)``); H and W must be multiples (pad first:
            :func:`ops.pad_to_multiple`).
        topk: key regions per query region, ``1 <= topk <= n_regions``.
        diff_routing: let gradients flow into query and key through the weights (BiFormer's default is detached).
        scale: affinity scale, default ``C ** -0.5`` (BiFormer's ``qk_dim ** -0.5``).
        valid_shape: ``(rows, cols)`` of real tokens in a padded map: region means over real tokens only, and
            regions of padding alone are never routed to (while ``topk`` real regions exist). ``None``: every token
            counts (BiFormer's ``auto_pad``).

    Returns ``(weights, indices)``, each ``[batch, n_regions, topk]``: ``indices`` (int64) of the key regions by
    decreasing affinity ``mean_r(q) . mean_r'(k) * scale`` (``torch.topk``'s order and ties), ``weights`` the softmax
    over those top-k affinities. Regions are numbered row-major (``ops.routed.regions``).
    """
    check_tensor('query', query, 4, '[batch, height, width, channels]')
    check_tensor('key', key, 4, '[batch, height, width, channels]')
    if key.shape != query.shape:
        raise ValueError(f'key must have the shape of query {tuple(query.shape)}, got {tuple(key.shape)}')
    check_compatible({'query': query, 'key': key})
    check_flag('diff_routing', diff_routing)
    check_scale(scale)
    grid = region_grid(*spatial_sizes(query, (1, 2)), n_win)
    _check_topk(topk, grid.n_regions)
    _check_valid_shape(valid_shape, grid)
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    if not diff_routing:
        query, key = query.detach(), key.detach()
    logits = (region_means(query, grid, valid_shape) * scale) @ region_means(key, grid, valid_shape).transpose(-1, -2)
    if valid_shape is not None:  # key regions of padding alone last (finite: topk may have to take some)
        empty = ~valid_tokens(grid, valid_shape, query.device).any(1)
        logits = logits.masked_fill(empty, torch.finfo(logits.dtype).min)
    top, indices = torch.topk(logits, k=int(topk), dim=-1)
    return top.softmax(-1), indices


def _check_valid_shape(valid_shape, grid: RegionGrid) -> None:
    if valid_shape is not None and (
            not isinstance(valid_shape, (tuple, list)) or len(valid_shape) != 2
            or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in valid_shape)
            or not all(1 <= n <= s for n, s in zip(valid_shape, grid.shape))):
        raise ValueError(f'valid_shape must be None or (rows, cols) of real tokens within the map {grid.shape}, '
                         f'got {valid_shape!r}')


def _validate(query, key, value, indices, grid: RegionGrid, valid_shape) -> None:
    check_tensor('key', key, 5, '[batch, height, width, heads, head_dim]')
    check_tensor('value', value, 5, '[batch, height, width, heads, value_dim]')
    if key.shape != query.shape:
        raise ValueError(f'key must have the shape of query {tuple(query.shape)}, got {tuple(key.shape)}')
    if value.shape[:-1] != query.shape[:-1]:
        raise ValueError(f'value must be [batch, height, width, heads, value_dim] = {tuple(query.shape[:-1])} + '
                         f'(value_dim,), got {tuple(value.shape)}')
    if not isinstance(indices, Tensor):
        raise TypeError(f'indices must be a torch.Tensor, got {type(indices).__name__}')
    if indices.dtype != torch.int64:
        raise TypeError(f'indices must be an int64 tensor (as region_routing / torch.topk return), got '
                        f'{indices.dtype}')
    b, r = query.shape[0], grid.n_regions
    if indices.dim() != 3 or indices.shape[0] != b or indices.shape[1] != r:
        raise ValueError(f'indices must be [batch={b}, n_regions={r}, topk], got shape {tuple(indices.shape)}')
    _check_topk(spatial_sizes(indices, (2,))[0], r)
    if indices.device != query.device:
        raise ValueError(f'indices must be on the device of query ({query.device}), got {indices.device}')
    _check_valid_shape(valid_shape, grid)
    check_compatible({'query': query, 'key': key, 'value': value})


def routed_attention(query: Tensor, key: Tensor, value: Tensor, indices: Tensor, n_win: int | Sequence[int], *,
                     scale: float | None = None, return_lse: bool = False,
                     valid_shape: Sequence[int] | None = None,
                     backend: str | None = None, token_grid=None) -> Tensor | tuple[Tensor, Tensor]:
    """Token-level routed attention: every query attends, per head, over all tokens of the ``topk`` key regions its
    region routed to (``indices``), in one softmax. No gathered copy of K/V is made.

    Args:
        query, key: ``[batch, H, W, heads, head_dim]`` (the channels-last layout of :func:`ops.na2d`).
        value: ``[batch, H, W, heads, value_dim]``.
        indices: int64 ``[batch, n_regions, topk]`` key regions per query region (shared by the heads), e.g.
            from :func:`region_routing`; a region listed twice counts twice (as the official gather).
        n_win: regions per side (int or ``(n_h, n_w)``); H and W must be multiples of it.
        scale: logit scale, default ``head_dim ** -0.5`` (BiFormer uses ``qk_dim ** -0.5``, all channels: pass it).
        return_lse: also return the log-sum-exp ``[batch, H, W, heads]`` (float32; float64 for float64 inputs),
            for an exact merge with another attention (:func:`ops.merge_attentions`).
        valid_shape: ``(rows, cols)`` of real keys; keys beyond (zero-padded map) are masked. ``None``: all keys
            count (BiFormer's ``auto_pad``: padded tokens attend and are attended unmasked). A query whose routed
            keys are all masked gets output 0 and lse ``-inf``.
        backend: ``None`` (the best available: triton on CUDA, torch elsewhere) or a name from
            ``ops.backend_names('routed')``; a named backend that cannot serve the call raises.
        token_grid: the real map inside a padded one (an :class:`ops.TokenGrid` or ``(rows, cols)``), read only
            while attention maps are recorded (:func:`ops.record_attention`); default: the grid is the map.

    Returns ``out [batch, H, W, heads, value_dim]`` in the (autocast) input dtype, and ``lse`` with
    ``return_lse``. Under ``torch.autocast`` the floating inputs are cast to the autocast dtype; outside it they
    must share one dtype.
    """
    check_tensor('query', query, 5, '[batch, height, width, heads, head_dim]')
    grid = region_grid(*spatial_sizes(query, (1, 2)), n_win)
    _validate(query, key, value, indices, grid, valid_shape)
    check_scale(scale)
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    check_flag('return_lse', return_lse)
    query, key, value = autocast_inputs(query, key, value)
    name = resolve_backend('routed', backend, query.device, query.dtype,
                           check_args=(query, key, value, indices, grid))
    valid = None if valid_shape is None else [int(n) for n in valid_shape]
    out, lse = torch.ops.attnzoo.routed_forward(query, key, value, indices, [grid.n_h, grid.n_w], scale, valid,
                                                name)
    if _recorder.active is not None:
        _maps.record(query, key, indices, grid, scale, valid, token_grid, lse if return_lse else None)
    return (out, lse) if return_lse else out
