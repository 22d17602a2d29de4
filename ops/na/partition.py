"""Conveniences the backbones share: padding to a multiple, block (window) and grid attention on the same op.

Maps that are not a multiple of the window (docs/design.md): one ``padding`` vocabulary, shared with the
``WindowAttention1D/2D/3D`` modules (:mod:`ops.na.modules`), and which official code each choice reproduces:

* ``padding='masked'`` (default): zero-pad q/k/v at the end to a multiple of the window, mask the padded keys
  (``valid_shape``), attend in blocks, crop. Every query sees only real tokens: the correct behaviour, and what our
  any-size MaxViT and MOAT do (timm's MaxViT and deeplab2 assert divisibility; at divisible sizes every choice
  equals them).
* ``padding='zeros'``: as ``'masked'`` but the padded keys (logit = rpb only, value 0) take part in the softmax:
  the quirk of official code that zero-pads q/k/v (CSWin's segmentation backbone, centred by its caller). This is
  NOT Swin's padding either: Swin (and Video Swin, and the Swin-based Agent/InLine/L2ViT code) pads the normalised
  tokens before the qkv projection, so its padded keys carry the projection bias; the two agree only for a
  bias-free qkv. For Swin's behaviour use the modules' ``padding='tokens'``, which pads the tokens before ``qkv``
  (a functional call receives q/k/v, so ``'tokens'`` is the modules' only).
* ``padding='clamp'`` (NATTEN): no padding; the last block's window is clamped inwards and overlaps the
  previous one (length 10, window 4: queries 8-9 see keys 6-9). Windows only: a grid needs padded lengths.

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

__all__ = ['window_attention', 'grid_attention', 'PADDINGS']

PADDINGS = ('masked', 'zeros', 'clamp')  # ways to meet a map that is not a multiple (module docstring)


def _partitioned(query: Tensor, key: Tensor, value: Tensor, size, grid: bool, padding: str,
                 **kwargs) -> Tensor | tuple[Tensor, Tensor]:
    ndim = query.dim() - 3
    if ndim not in (1, 2, 3):
        raise ValueError(f'query must be [batch, *spatial (1-3 dims), heads, head_dim], got {tuple(query.shape)}')
    size = to_tuple(size, ndim, 'grid_size' if grid else 'window_size')
    if not isinstance(padding, str) or padding not in PADDINGS:
        hint = ("; Swin's token padding (before qkv) is WindowAttention2D(padding='tokens')" if padding == 'tokens'
                else '')
        raise ValueError(f'padding must be one of {PADDINGS}, got {padding!r}{hint}')
    shape = spatial_sizes(query, range(1, ndim + 1))
    if padding == 'clamp':
        if grid:
            raise ValueError("grid_attention needs padding 'masked' or 'zeros' (a grid needs lengths that are "
                             "multiples of it), got 'clamp'")
        return neighborhood_attention(ndim, query, key, value, size, size, **kwargs)
    dims = range(1, ndim + 1)
    q, _ = pad_to_multiple(query, size, dims)
    k, _ = pad_to_multiple(key, size, dims)
    v, _ = pad_to_multiple(value, size, dims)
    padded = spatial_sizes(q, dims)
    dilation = tuple(n // s for n, s in zip(padded, size)) if grid else 1
    # compiled: always pass valid_shape (a full one masks nothing) rather than guard on divisibility
    valid = shape if padding == 'masked' and (torch.compiler.is_compiling() or padded != shape) else None
    if _recorder.active is not None and kwargs.get('token_grid') is None:
        kwargs['token_grid'] = _recorder.TokenGrid(shape)  # the real map inside the padded grid
    result = neighborhood_attention(ndim, q, k, v, size, 1 if grid else size, dilation, valid_shape=valid, **kwargs)
    if isinstance(result, tuple):
        return crop(result[0], shape, dims), crop(result[1], shape, dims)
    return crop(result, shape, dims)


def window_attention(query: Tensor, key: Tensor, value: Tensor, window_size: int | Sequence[int],
                     padding: str = 'masked', **kwargs) -> Tensor | tuple[Tensor, Tensor]:
    """Block (Swin W-MSA / MaxViT block) attention: every query attends to its non-overlapping window.

    ``[batch, *spatial, heads, head_dim]`` in and out; as ``na*d`` with kernel = stride = window. ``padding``
    (``'masked'`` / ``'zeros'`` / ``'clamp'``) as in the module docstring: ``'masked'`` is the correct behaviour,
    ``'zeros'`` the unmasked zero padding some official code has (not Swin's token padding, which is
    ``WindowAttention2D(padding='tokens')``). Other keyword arguments (``rpb`` ``[heads, 2w-1, ...]``, ``scale``,
    ``additional_keys``, ``return_lse``, ``backend``, ...) go to :func:`ops.na2d` and friends.
    """
    return _partitioned(query, key, value, window_size, False, padding, **kwargs)


def grid_attention(query: Tensor, key: Tensor, value: Tensor, grid_size: int | Sequence[int],
                   padding: str = 'masked', **kwargs) -> Tensor | tuple[Tensor, Tensor]:
    """MaxViT grid attention: a ``G``-grid spread over the (zero-padded) map, i.e. kernel ``G`` with dilation
    ``L_padded / G`` per axis. Arguments as :func:`window_attention` (``padding`` ``'masked'`` or ``'zeros'``)."""
    return _partitioned(query, key, value, grid_size, True, padding, **kwargs)
