"""Conveniences the backbones share: padding to a multiple, block (window) and grid attention on the same op.

Maps that are not a multiple of the window (docs/design.md), and which official code each choice reproduces:

* ``padding='zeros'`` (default): zero-pad q/k/v at the end to a multiple of the window, attend in blocks, crop.
  Padded keys (logit = rpb only, value 0) take part in the softmax. This is NOT Swin's padding: Swin (and Video
  Swin, and the Swin-based Agent/InLine/L2ViT code) pads the normalised tokens before the qkv projection, so its
  padded keys carry the projection bias; the two agree only for a bias-free qkv. For Swin's behaviour use
  ``WindowAttention1D/2D/3D(padding='tokens')`` (:mod:`ops.na.modules`), which pads the tokens before ``qkv``.
* ``padding='zeros', mask_padding=True``: padded keys are masked (``valid_shape``), so every query sees only real
  tokens: the correct behaviour, and what our any-size MaxViT does (timm's MaxViT asserts divisibility; at
  divisible sizes every choice equals it).
* ``padding='clamp'`` (NATTEN): no padding; the last block's window is clamped inwards and overlaps the
  previous one (length 10, window 4: queries 8-9 see keys 6-9).

Relative position bias tables use ``table[key - query + w - 1]`` per axis; Swin/timm index ``query - key``,
so their tables map onto ours flipped on every spatial axis.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import spatial_sizes
from .._shape import crop, pad_to_multiple
from ..maps import _recorder
from .api import neighborhood_attention
from .pattern import to_tuple

__all__ = ['window_attention', 'grid_attention']


def _partitioned(query: Tensor, key: Tensor, value: Tensor, size, grid: bool, padding: str, mask_padding: bool,
                 **kwargs) -> Tensor | tuple[Tensor, Tensor]:
    ndim = query.dim() - 3
    if ndim not in (1, 2, 3):
        raise ValueError(f'query must be [batch, *spatial (1-3 dims), heads, head_dim], got {tuple(query.shape)}')
    size = to_tuple(size, ndim, 'grid_size' if grid else 'window_size')
    if padding not in ('zeros', 'clamp'):
        raise ValueError(f"padding must be 'zeros' or 'clamp' (NATTEN), got {padding!r}; Swin's token padding is "
                         "WindowAttention2D(padding='tokens')")
    shape = spatial_sizes(query, range(1, ndim + 1))
    if padding == 'clamp':
        if mask_padding:
            raise ValueError("mask_padding applies to padding='zeros' only (clamped windows pad nothing)")
        if grid:
            raise ValueError("grid_attention needs padding='zeros' (a grid needs lengths that are multiples of it)")
        return neighborhood_attention(ndim, query, key, value, size, size, **kwargs)
    dims = range(1, ndim + 1)
    q, _ = pad_to_multiple(query, size, dims)
    k, _ = pad_to_multiple(key, size, dims)
    v, _ = pad_to_multiple(value, size, dims)
    padded = spatial_sizes(q, dims)
    dilation = tuple(n // s for n, s in zip(padded, size)) if grid else 1
    # compiled: always pass valid_shape (a full one masks nothing) rather than guard on divisibility
    valid = shape if mask_padding and (torch.compiler.is_compiling() or padded != shape) else None
    if _recorder.active is not None and kwargs.get('token_grid') is None:
        kwargs['token_grid'] = _recorder.TokenGrid(shape)  # the real map inside the padded grid
    result = neighborhood_attention(ndim, q, k, v, size, 1 if grid else size, dilation, valid_shape=valid, **kwargs)
    if isinstance(result, tuple):
        return crop(result[0], shape, dims), crop(result[1], shape, dims)
    return crop(result, shape, dims)


def window_attention(query: Tensor, key: Tensor, value: Tensor, window_size: int | Sequence[int],
                     padding: str = 'zeros', mask_padding: bool = False, **kwargs) -> Tensor | tuple[Tensor, Tensor]:
    """Block (Swin W-MSA / MaxViT block) attention: every query attends to its non-overlapping window.

    ``[batch, *spatial, heads, head_dim]`` in and out; as ``na*d`` with kernel = stride = window. ``padding``
    (``'zeros'`` / ``'clamp'``) and ``mask_padding`` as in the module docstring: unmasked zeros pad q/k/v, which is
    not Swin's token padding (that is ``WindowAttention2D(padding='tokens')``); masked zeros are the correct
    behaviour. Other keyword arguments (``rpb`` ``[heads, 2w-1, ...]``, ``scale``, ``additional_keys``,
    ``return_lse``, ``backend``, ...) go to :func:`ops.na2d` and friends.
    """
    return _partitioned(query, key, value, window_size, False, padding, mask_padding, **kwargs)


def grid_attention(query: Tensor, key: Tensor, value: Tensor, grid_size: int | Sequence[int],
                   padding: str = 'zeros', mask_padding: bool = False, **kwargs) -> Tensor | tuple[Tensor, Tensor]:
    """MaxViT grid attention: a ``G``-grid spread over the (zero-padded) map, i.e. kernel ``G`` with dilation
    ``L_padded / G`` per axis. Arguments as :func:`window_attention`."""
    return _partitioned(query, key, value, grid_size, True, padding, mask_padding, **kwargs)
