"""The region partition of bi-level routing: an ``n_win x n_win`` grid of equal regions over a ``[H, W]`` map.

Region ``r = ry * n_w + rx`` (row-major, BiFormer's ``(j i)`` order) holds the tokens ``(ry * rh + i, rx * rw + j)``
for ``i < rh = H / n_h``, ``j < rw = W / n_w``; inside a region tokens are row-major too. Every backend and the
routing share this one definition.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import size_pair

__all__ = ['RegionGrid', 'region_grid', 'to_regions', 'from_regions', 'valid_tokens']


@dataclass(frozen=True)
class RegionGrid:
    """``n_h x n_w`` regions of ``rh x rw`` tokens each over an ``[H, W]`` map."""

    n_h: int
    n_w: int
    rh: int
    rw: int

    @property
    def n_regions(self) -> int:
        return self.n_h * self.n_w

    @property
    def region_size(self) -> int:
        return self.rh * self.rw

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_h * self.rh, self.n_w * self.rw


def region_grid(height: int, width: int, n_win) -> RegionGrid:
    """The partition of an ``[height, width]`` map into ``n_win`` (int or ``(n_h, n_w)``) regions per side.

    The map must divide evenly: padding is the caller's (BiFormer's ``auto_pad`` pads the tokens before the qkv
    projection; :func:`ops.pad_to_multiple` does it).
    """
    n_h, n_w = size_pair(n_win, 'n_win')
    if height % n_h or width % n_w:
        raise ValueError(f'the map [{height}, {width}] does not divide into n_win=({n_h}, {n_w}) regions per side; '
                         f'pad it to a multiple first (ops.pad_to_multiple(x, ({n_h}, {n_w}), dims=(1, 2)))')
    return RegionGrid(n_h, n_w, height // n_h, width // n_w)


def to_regions(x: Tensor, grid: RegionGrid, dtype: torch.dtype | None = None) -> Tensor:
    """``[B, H, W, heads, D]`` -> region-major ``[B, heads, R, S, D]``: always a fresh contiguous copy (in ``dtype``),
    which callers may modify in place."""
    b, _, _, h, d = x.shape
    x = x.reshape(b, grid.n_h, grid.rh, grid.n_w, grid.rw, h, d).permute(0, 5, 1, 3, 2, 4, 6)
    x = x.to(dtype or x.dtype, memory_format=torch.contiguous_format, copy=True)
    return x.view(b, h, grid.n_regions, grid.region_size, d)


def from_regions(x: Tensor, grid: RegionGrid) -> Tensor:
    """Inverse of :func:`to_regions`: ``[B, heads, R, S, D]`` -> ``[B, H, W, heads, D]``."""
    b, h, _, _, d = x.shape
    x = x.reshape(b, h, grid.n_h, grid.n_w, grid.rh, grid.rw, d).permute(0, 2, 4, 3, 5, 1, 6)
    return x.reshape(b, grid.n_h * grid.rh, grid.n_w * grid.rw, h, d)


def valid_tokens(grid: RegionGrid, valid_shape, device) -> Tensor:
    """``[R, S]`` bool: is each region's token inside the first ``valid_shape = (rows, cols)`` of the map."""
    y = torch.arange(grid.shape[0], device=device)[:, None] < valid_shape[0]
    x = torch.arange(grid.shape[1], device=device)[None, :] < valid_shape[1]
    return to_regions((y & x)[None, :, :, None, None], grid)[0, 0, :, :, 0]
