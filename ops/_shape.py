"""Padding to a multiple and cropping back: shared by every op family and module that pads a token grid.

Under ``torch.compile`` with dynamic shapes, a crop written as slicing makes a view whose contiguity depends on
whether anything was padded, so the graph guards on ``size % multiple == 0`` and recompiles whenever a new
resolution crosses that line (detection and segmentation see a new size every batch). Compiled code therefore
pads unconditionally and crops through the ``attnzoo::crop`` custom op, whose output is a fresh contiguous
tensor of the cropped shape; eager code keeps the zero-copy paths (no pad when nothing is needed, a slicing view).

TF's ``'SAME'`` padding of strided convolutions and pools (MaxViT, MOAT: :func:`same_padding`, :func:`pad_same`) is
written in integer arithmetic: timm's ``pad_same`` computes it as ``max(ceil(L / s) ...)`` through a float division,
which on a symbolic size becomes a nested ``Max(CeilToInt(FloatTrueDiv(...)))`` expression that grows with every
strided layer; sympy's simplification of it made a four-stage MaxViT's ``torch.export`` run for minutes (15 s
with the integer form).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import size_pair, spatial_sizes

__all__ = ['pad_to_multiple', 'crop', 'same_padding', 'pad_same']


def _dims(x: Tensor, dims: Sequence[int]) -> list[int]:
    if any(not -x.dim() <= d < x.dim() for d in dims):
        raise ValueError(f'dims {list(dims)} out of range for a tensor of rank {x.dim()}')
    return [d % x.dim() for d in dims]


def pad_to_multiple(x: Tensor, multiple: int | Sequence[int], dims: Sequence[int]) -> tuple[Tensor, tuple[int, ...]]:
    """Zero-pad ``x`` at the end of each dim in ``dims`` to a multiple of ``multiple`` (int or one per dim).

    Returns ``(padded, original_sizes)``; undo with :func:`crop` (``crop(padded, original_sizes, dims)``).
    """
    dims = _dims(x, dims)
    mult = tuple(multiple) if isinstance(multiple, (list, tuple)) else (multiple,) * len(dims)
    if len(mult) != len(dims) or any(isinstance(m, bool) or not isinstance(m, (int, torch.SymInt)) or m < 1
                                        for m in mult):  # SymInt: a size-derived window (exported)
        raise ValueError(f'multiple must be an int >= 1 or one per dim ({len(dims)}), got {multiple!r}')
    sizes = spatial_sizes(x, dims)
    pad = [0] * (2 * x.dim())
    for d, m, n in zip(dims, mult, sizes):
        pad[2 * (x.dim() - 1 - d) + 1] = (n + m - 1) // m * m - n  # = -n % m, in a form symbolic sizes can bound
    if torch.compiler.is_compiling() or any(pad):  # compiled: no branch on divisibility (see module docstring)
        x = F.pad(x, pad)
    return x, sizes


def same_padding(length, kernel_size: int, stride: int, dilation: int = 1) -> tuple:
    """TF ``'SAME'`` padding of one axis of ``length`` (int or SymInt): ``(before, after)`` so that a
    ``kernel_size`` / ``stride`` / ``dilation`` window gives ``ceil(length / stride)`` outputs, the odd element
    after (timm's ``get_same_padding``, same values, integer arithmetic only: see the module docstring)."""
    span = (kernel_size - 1) * dilation + 1
    total = ((length + stride - 1) // stride - 1) * stride + span - length
    if span < stride:  # only then can the total be negative (sym_max: max on ints, symbolic on SymInts)
        total = torch.sym_max(total, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel_size: int | Sequence[int], stride: int | Sequence[int],
             dilation: int | Sequence[int] = 1, value: float = 0.) -> Tensor:
    """Pad the last two dims of ``x`` for a TF ``'SAME'`` conv / pool (:func:`same_padding`; timm's ``pad_same``);
    ``kernel_size``, ``stride`` and ``dilation``: an int or one per dim ``(height, width)``."""
    axes = zip(spatial_sizes(x, (-2, -1)), size_pair(kernel_size, 'kernel_size'), size_pair(stride, 'stride'),
               size_pair(dilation, 'dilation'))
    (top, bottom), (left, right) = (same_padding(n, k, s, d) for n, k, s, d in axes)
    return F.pad(x, (left, right, top, bottom), value=value)


def crop(x: Tensor, sizes: Sequence[int], dims: Sequence[int]) -> Tensor:
    """Keep the first ``sizes[i]`` entries of each dim ``dims[i]`` (a view in eager mode)."""
    dims = _dims(x, dims)
    if len(sizes) != len(dims):
        raise ValueError(f'crop needs one size per dim, got sizes {list(sizes)} for dims {dims}')
    if torch.compiler.is_compiling():
        return torch.ops.attnzoo.crop(x, list(dims), list(sizes))
    index = [slice(None)] * x.dim()
    for d, n in zip(dims, sizes):
        index[d] = slice(0, n)
    return x[tuple(index)]


@torch.library.custom_op('attnzoo::crop', mutates_args=())
def _crop_op(x: Tensor, dims: list[int], sizes: list[int]) -> Tensor:
    index = [slice(None)] * x.dim()
    for d, n in zip(dims, sizes):
        index[d] = slice(0, n)
    return x[tuple(index)].clone(memory_format=torch.contiguous_format)


@_crop_op.register_fake
def _(x, dims, sizes):
    shape = list(x.shape)
    for d, n in zip(dims, sizes):
        shape[d] = n
    return x.new_empty(shape)


def _crop_setup(ctx, inputs, output):
    x, dims, _ = inputs
    ctx.dims, ctx.full = dims, [x.shape[d] for d in dims]


def _crop_backward(ctx, grad):
    pad = [0] * (2 * grad.dim())
    for d, n in zip(ctx.dims, ctx.full):
        pad[2 * (grad.dim() - 1 - d) + 1] = n - grad.shape[d]
    return F.pad(grad, pad), None, None


torch.library.register_autograd('attnzoo::crop', _crop_backward, setup_context=_crop_setup)
