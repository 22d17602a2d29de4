"""Generalized neighborhood attention semantics: the one place that says which keys a query sees.

Every backend (reference, torch, triton) follows these rules, which are NATTEN's (docs/design.md), per spatial axis:

* window halves: ``left = k // 2``, ``right = k // 2 + (k % 2 - 1)``;
* dilation ``d``: token ``x`` lives in group ``x % d`` and attends only inside it, in group coordinates ``x // d``;
* stride ``s``: queries ``q // s`` share the window of their group leader ``min((q // s) * s + s // 2, L - 1)``,
  clamped into ``[0, L - k]`` (a border query still sees ``k`` keys, shifted inwards);
* causal: leader ``min((q // s) * s + s - 1, L - 1)``; keys ``[max(leader - k + 1, 0), q]``;
* ``valid_shape``: keys at index ``>= valid_shape[axis]`` are masked (zero-padded Swin/MaxViT-style blocks);
* ``border='mask'`` (TransNeXt's zero-padded ``unfold``): the window of a non-causal axis stays centred on the
  leader, ``[leader - left, leader - left + k)``, and its slots outside ``[0, L)`` are masked (a border query sees
  fewer keys) instead of the window being clamped inwards; ``kernel * dilation`` may then exceed the length.

Window *slots*: slot ``j`` of a non-causal window is ``leader - left + j`` with ``border='mask'`` and the ``j``-th
key of the clamped window with ``'clamp'``; of a causal window the ``j``-th key from its start. The slot order
(row-major over axes) is the last dim of :func:`ops.na.na_av`'s weights.

The N-D neighbourhood is the Cartesian product of the per-axis ones; relative position bias uses
``table[(key - query) // dilation + k - 1]`` per axis.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IntOrTuple = int | Sequence[int]
BoolOrTuple = bool | Sequence[bool]

BORDERS = ('clamp', 'mask')

__all__ = ['NASpec', 'BORDERS', 'make_spec', 'to_tuple', 'axis_window', 'axis_neighbors', 'dense_mask',
           'dense_rpb_index']


@dataclass(frozen=True)
class NASpec:
    """Static description of one neighborhood-attention pattern (all per-axis tuples of equal length)."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    is_causal: tuple[bool, ...]
    valid_shape: tuple[int, ...] | None = None
    border: str = 'clamp'  # 'clamp' (NATTEN: shifted inwards) or 'mask' (centred, zero-padded and masked)

    @property
    def ndim(self) -> int:
        return len(self.kernel_size)


def to_tuple(value, ndim: int, name: str, kind: type = int) -> tuple:
    """Expand an int/bool or per-axis sequence to an ``ndim`` tuple, naming ``name`` on error."""
    if isinstance(value, (list, tuple)):
        if len(value) != ndim:
            raise ValueError(f'{name} must be a {kind.__name__} or a sequence of {ndim}, got {value!r}')
        values = tuple(value)
    else:
        values = (value,) * ndim
    for v in values:
        if kind is bool:
            if not isinstance(v, bool):
                raise TypeError(f'{name} must contain bools, got {value!r}')
        elif isinstance(v, bool) or not isinstance(v, (int, torch.SymInt)):
            raise TypeError(f'{name} must contain ints, got {value!r}')
    return values


def make_spec(
        spatial_shape: Sequence[int],
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        dilation: IntOrTuple = 1,
        is_causal: BoolOrTuple = False,
        valid_shape: Sequence[int] | None = None,
        border: str = 'clamp',
) -> NASpec:
    """Validate a pattern against the token grid ``spatial_shape`` and return its :class:`NASpec`."""
    if border not in BORDERS:
        raise ValueError(f'border must be one of {BORDERS}, got {border!r}')
    ndim = len(spatial_shape)
    ks = to_tuple(kernel_size, ndim, 'kernel_size')
    st = to_tuple(stride, ndim, 'stride')
    dl = to_tuple(dilation, ndim, 'dilation')
    ca = to_tuple(is_causal, ndim, 'is_causal', bool)
    for axis, (length, k, s, d) in enumerate(zip(spatial_shape, ks, st, dl)):
        if k < 1 or s < 1 or d < 1:
            raise ValueError(f'kernel_size, stride and dilation must be >= 1, got {ks}, {st}, {dl} (axis {axis})')
        if k * d > length and border == 'clamp':
            raise ValueError(
                f'kernel_size * dilation must be <= the input length on every axis; axis {axis} has length '
                f'{length} but kernel_size={k}, dilation={d} (pad the input, lower them, or use border="mask")')
        if s > k:
            raise ValueError(f'stride must be <= kernel_size on every axis; axis {axis} has stride={s} > {k}')
    if valid_shape is not None:
        valid_shape = tuple(v if isinstance(v, torch.SymInt) else int(v) for v in valid_shape)
        if len(valid_shape) != ndim or any(not 1 <= v <= n for v, n in zip(valid_shape, spatial_shape)):
            raise ValueError(f'valid_shape must hold {ndim} sizes in [1, length], got {valid_shape} for '
                             f'input of spatial shape {tuple(spatial_shape)}')
        # a full valid_shape masks nothing; compiled graphs keep it rather than guard on the comparison
        if not torch.compiler.is_compiling() and valid_shape == tuple(spatial_shape):
            valid_shape = None
    return NASpec(ks, st, dl, ca, valid_shape, border)


def axis_window(length: int, kernel: int, stride: int, dilation: int, causal: bool,
                device: torch.device | str | None = None, border: str = 'clamp') -> tuple[torch.Tensor, torch.Tensor]:
    """Per query index on one axis: (first key index, number of keys); keys are ``first + j * dilation``."""
    q = torch.arange(length, device=device)
    group, qg = q % dilation, q // dilation
    group_len = (length - group + dilation - 1) // dilation
    left = kernel // 2
    if causal:
        leader = torch.minimum((qg // stride) * stride + stride - 1, group_len - 1)
        start = (leader - kernel + 1).clamp_min(0)
        count = qg - start + 1
    else:
        leader = torch.minimum((qg // stride) * stride + stride // 2, group_len - 1)
        if border == 'mask':
            start = (leader - left).clamp_min(0)
            count = torch.minimum(leader - left + kernel, group_len) - start
        else:
            start = torch.minimum((leader - left).clamp_min(0), group_len - kernel)
            count = torch.full_like(q, kernel)
    return start * dilation + group, count


def axis_neighbors(length: int, kernel: int, stride: int, dilation: int, causal: bool,
                   device: torch.device | str | None = None,
                   border: str = 'clamp') -> tuple[torch.Tensor, torch.Tensor]:
    """Per query on one axis and window slot: key indices ``[length, kernel]`` (clamped in range) and their
    validity mask (slot order: module docstring)."""
    j = torch.arange(kernel, device=device)
    if border == 'mask' and not causal:
        q = torch.arange(length, device=device)
        group, qg = q % dilation, q // dilation
        group_len = (length - group + dilation - 1) // dilation
        leader = torch.minimum((qg // stride) * stride + stride // 2, group_len - 1)
        pos = leader[:, None] - kernel // 2 + j[None, :]
        valid = (pos >= 0) & (pos < group_len[:, None])
        return torch.minimum(pos.clamp_min(0), group_len[:, None] - 1) * dilation + group[:, None], valid
    first, count = axis_window(length, kernel, stride, dilation, causal, device)
    valid = j[None, :] < count[:, None]
    idx = first[:, None] + torch.where(valid, j[None, :], 0) * dilation
    return idx, valid


def _axis_dense(spec: NASpec, shape: Sequence[int], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for axis, length in enumerate(shape):
        k, d = spec.kernel_size[axis], spec.dilation[axis]
        idx, valid = axis_neighbors(length, k, spec.stride[axis], d, spec.is_causal[axis], device, spec.border)
        mask = torch.zeros(length, length, dtype=torch.bool, device=device)
        rows = torch.arange(length, device=device)[:, None].expand_as(idx)
        mask[rows[valid], idx[valid]] = True  # not scatter_: clamped duplicates of invalid slots would win
        if spec.valid_shape is not None:
            mask[:, spec.valid_shape[axis]:] = False
        q = torch.arange(length, device=device)
        rel = torch.div(q[None, :] - q[:, None], d, rounding_mode='floor') + k - 1
        out.append((mask, torch.where(mask, rel, 0)))
    return out


def _expand_axis(table: torch.Tensor, axis: int, shape: Sequence[int]) -> torch.Tensor:
    """Broadcast one axis' ``[L_a, L_a]`` (query, key) table to ``[N, N]`` over row-major tokens of ``shape``."""
    n = len(shape)
    view = [1] * (2 * n)
    view[axis], view[n + axis] = table.shape
    total = 1
    for length in shape:
        total *= length
    return table.reshape(view).expand(*shape, *shape).reshape(total, total)


def dense_mask(spec: NASpec, shape: Sequence[int], device=None) -> torch.Tensor:
    """``[N, N]`` bool: may query token i attend to key token j (row-major flattening of ``shape``)."""
    mask = None
    for axis, (m, _) in enumerate(_axis_dense(spec, shape, device)):
        m = _expand_axis(m, axis, shape)
        mask = m if mask is None else mask & m
    return mask


def dense_rpb_index(spec: NASpec, shape: Sequence[int], device=None) -> tuple[torch.Tensor, ...]:
    """Per axis an ``[N, N]`` index into the rpb table (0 where masked); use as ``rpb[:, *index]``."""
    return tuple(_expand_axis(rel, axis, shape) for axis, (_, rel) in enumerate(_axis_dense(spec, shape, device)))
