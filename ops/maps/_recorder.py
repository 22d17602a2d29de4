"""Recording exact attention maps from the ops: the recorder the op APIs consult, and the records it builds.

While :func:`record_attention` is active, every op API (``na*``, ``window/grid_attention``, ``routed_attention``,
``dense_attention``, ``agent_attention``, ``linear_attention``, ``na_av``, ``merge_attentions``) hands its inputs to
its family's row function (``ops/<family>/maps.py``), which computes the attention rows of the chosen queries
only — the same softmax (or, for linear attention, the same implied weights) the op computes, never an N x N
matrix — and gives them here. When no recording is active the APIs test one module global (``active``) and do
nothing else: no cost, no effect on autograd or on compiled graphs. Recording is eager only: an op called while
compiling, exporting or tracing with a recording active raises.

Placement. Grid ops (na, routed) see a token grid, the op's *frame*, which may be padded; their ``token_grid``
(:class:`TokenGrid`) says where the frame lies on the layer's map (``shape`` the real map, ``origin`` the map
position of the frame's first token: 0 for end padding, negative for padding before, positive for a slab of a
larger map); default: the frame is the map. Flat ops (dense, linear) see tokens only; their ``token_grid`` is the
query and key grids (one :class:`TokenGrid` or ``(H, W)`` for self-attention, or a pair), with ``prefix`` tokens
(a class token) before a row-major grid. A *named token set* (a string, e.g. ``'agents'``, ``'slots'``) stands for
tokens that are not on a grid: an op whose queries are a named set defines that set's tokens as the weights of its
output rows over its keys; an op whose keys are a named set composes through it, so agent attention and GLMix's
clustering / relation / dispatch come out as exact composed query-to-token weights (and the weights over the set
as ``via``).

Grouping. With a model, every op call belongs to the innermost module of the model running it (a layer); the
calls of one module invocation are combined: partial attentions merged by :func:`ops.merge_attentions` become one
softmax (their rows rescaled by ``exp(lse_i - lse)``), and calls that hold different queries with the same keys
(Swin's shifted-window slabs) become one record.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ['TokenGrid', 'AttentionMap', 'Recording', 'record_attention', 'active', 'current']

active: Recording | None = None  # the recording in force; every op API tests this before anything else


class TokenGrid(NamedTuple):
    """Where an op's tokens lie on a layer's feature map (used only while recording attention maps).

    ``shape``: the map (the real tokens); ``origin``: map position of the op's first grid token (grid ops:
    ``(0, 0)`` for a frame padded at the end, negative where padding precedes the map, the slab offset for a part of
    the map); ``prefix``: flat ops' tokens before the row-major grid (a class token); ``name``: the name of a key
    grid that is not the layer's map (``'pooled'`` for pooled / spatially reduced keys).
    """

    shape: tuple[int, ...]
    origin: tuple[int, ...] | None = None
    prefix: int = 0
    name: str = 'map'


@dataclass(frozen=True)
class AttentionMap:
    """The attention of chosen queries in one layer.

    ``maps [B, P, heads, *key_grid]`` are the weights over the primary key grid (the layer's map, or the pooled grid
    where every key is pooled); ``extra`` the other keys of the same attention, each ``[B, P, heads, *shape]``:
    ``'pooled'`` tokens beside a local window, ``'padding'`` (the summed weight of zero-padded keys: 0 where the op
    masks them), ``'prefix'`` (class token), ``'extra'`` (additional key tokens). ``normalized``: the weights of a
    row sum to 1 over ``maps`` and ``extra`` (every softmax, composed or not); linear attention's implied weights
    (``kind == 'linear'``) and ``na_av``'s added weights do not (see ``ops.linear.maps``). ``via``: for composed
    attentions, the weights ``[B, P, heads, n]`` over the intermediate tokens (``'agents'``, ``'slots'``).
    ``queries [P, ndim]``: the query cells (row, col) on ``grid``, the layer's map.
    """

    name: str
    stage: int | None
    kind: str
    grid: tuple[int, ...]
    queries: Tensor
    maps: Tensor
    key_grid: tuple[int, ...]
    extra: dict[str, Tensor] = field(default_factory=dict)
    via: dict[str, Tensor] = field(default_factory=dict)
    normalized: bool = True

    @property
    def heads(self) -> int:
        return self.maps.shape[2]

    def total(self) -> Tensor:
        """Row sums ``[B, P, heads]`` over ``maps`` and every ``extra`` (1 for a normalized attention)."""
        dims = tuple(range(3, self.maps.dim()))
        out = self.maps.sum(dims) if dims else self.maps.clone()
        for t in self.extra.values():
            out = out + (t.sum(tuple(range(3, t.dim()))) if t.dim() > 3 else t)
        return out


@dataclass
class _Partial:
    """One op call's rows before a layer's calls are combined."""

    kind: str
    grid: tuple[int, ...]
    covered: Tensor  # [P] bool: which points this call holds the queries of
    segments: dict[str, Tensor]  # name -> [B, P, heads, *shape]
    lse: Tensor | None  # [B, P, heads]
    normalized: bool = True
    via: dict[str, Tensor] = field(default_factory=dict)

    def joins(self, other: _Partial) -> bool:
        """Same attention over other queries (Swin's slabs): same kind and map, shared segments of equal shape."""
        return (self.kind == other.kind and self.grid == other.grid and self.normalized == other.normalized
                and all(t.shape == other.segments[n].shape for n, t in self.segments.items() if n in other.segments)
                and self.via.keys() == other.via.keys() and not (self.covered & other.covered).any())


def _grid_value(value, what: str) -> TokenGrid:
    if isinstance(value, TokenGrid):
        grid = value
    elif isinstance(value, (tuple, list, torch.Size)) and all(isinstance(n, int) for n in value):
        grid = TokenGrid(tuple(value))
    else:
        raise TypeError(f'{what} must be a TokenGrid, a tuple of map sizes or a token-set name, got {value!r}')
    shape = tuple(int(n) for n in grid.shape)
    origin = (0,) * len(shape) if grid.origin is None else tuple(int(o) for o in grid.origin)
    if not shape or any(n < 1 for n in shape) or len(origin) != len(shape) or grid.prefix < 0:
        raise ValueError(f'{what} must have positive sizes, one origin per axis and prefix >= 0, got {grid!r}')
    return TokenGrid(shape, origin, int(grid.prefix), grid.name)


def _where(covered: Tensor, a: Tensor | None, b: Tensor | None) -> Tensor:
    """Rows ``[B, P, ...]`` of ``a`` where ``covered [P]``, else of ``b`` (a missing segment counts as zeros)."""
    like = a if a is not None else b
    a = torch.zeros_like(like) if a is None else a
    b = torch.zeros_like(like) if b is None else b
    return torch.where(covered.reshape(1, -1, *([1] * (like.dim() - 2))), a, b)


def grid_pair(token_grid) -> tuple:
    """A flat op's ``token_grid`` as ``(query grid, key grid)``: a pair stays, one grid (or set name) is both."""
    if isinstance(token_grid, tuple) and not isinstance(token_grid, TokenGrid) and len(token_grid) == 2 and not all(
            isinstance(n, int) for n in token_grid):
        return token_grid
    return token_grid, token_grid


def _compose(weights: Tensor, expansion: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """``weights [B, P, h, S]`` over a token set whose tokens are ``expansion`` (name -> ``[B, h', S, *shape]``):
    the composed weights per segment ``[B, P, max(h, h'), *shape]`` (heads broadcast when one side has one)."""
    out = {}
    for name, exp in expansion.items():
        h, h2 = weights.shape[2], exp.shape[1]
        if h != h2 and 1 not in (h, h2):
            raise ValueError(f'{what}: cannot compose {h} heads through a token set of {h2} heads')
        heads = max(h, h2)
        w = weights.expand(-1, -1, heads, -1)
        e = exp.expand(-1, heads, *exp.shape[2:]).flatten(3)
        out[name] = torch.einsum('bphs,bhsk->bphk', w, e).reshape(*w.shape[:3], *exp.shape[3:])
    return out


class Recording:
    """What :func:`record_attention` yields: ``maps`` (name -> :class:`AttentionMap`), filled when it exits.

    ``points``: query positions ``(x, y)`` in pixels of an image of ``image_size`` ``(H, W)`` (for 1-D / 3-D grids,
    one coordinate per axis, last axis first); a point picks, on every layer's map, the cell that holds the pixel
    centre (``floor((y + 0.5) * rows / H)``). ``model``: name the records by the model's modules (innermost module
    running an op) and give their stage (the index of ``model.feature_info`` whose module holds them); without it
    records are numbered. ``batch``: the image batch, to refuse ops whose batch folds windows.
    """

    def __init__(self, points: Sequence[Sequence[float]], image_size: Sequence[int], model: nn.Module | None = None,
                 batch: int | None = None):
        size = tuple(int(n) for n in image_size)
        if not size or any(n < 1 for n in size):
            raise ValueError(f'image_size must hold positive sizes, got {image_size!r}')
        try:
            pts = torch.tensor([[float(c) for c in p] for p in points], dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(f'points must be a sequence of (x, y) coordinates, got {points!r}') from None
        if pts.dim() != 2 or pts.shape[0] == 0 or pts.shape[1] != len(size):
            raise ValueError(f'points must be a non-empty sequence of {len(size)} coordinates each ('
                             f'{"x, y" if len(size) == 2 else "last axis first"}), got {points!r}')
        pts = pts.flip(1)  # (x, y) -> (row, col)
        bounds = torch.tensor(size, dtype=torch.float64)
        outside = ((pts < 0) | (pts >= bounds)).any(1)
        if outside.any():
            bad = [tuple(float(c) for c in p.flip(0)) for p in pts[outside]]
            raise ValueError(f'points {bad} lie outside the image (x in [0, {size[-1]}), y in [0, {size[0]}) for '
                             f'an image of size {size[-1]}x{size[0]})' if len(size) == 2 else
                             f'points {bad} lie outside the image of size {size}')
        self.image_size = size
        self.points = (pts + 0.5) / bounds  # normalised pixel centres, (row, col)
        self.batch = batch
        self.maps: dict[str, AttentionMap] = {}
        self._names = {id(m): n for n, m in model.named_modules()} if model is not None else None
        self._stages = [f['module'] for f in getattr(model, 'feature_info', None) or []
                        if isinstance(f, dict) and 'module' in f] if model is not None else []
        self._stack: list[list] = []  # per running model module: [name, partials]
        self._loose: list[_Partial] = []  # partials of calls outside the model's modules
        self._sets: dict[str, dict[str, Tensor]] = {}
        self._lses: list[tuple[weakref.ref, _Partial]] = []
        self._calls: dict[str, int] = {}
        self._last: _Partial | None = None

    # -- used by the family glue (ops/<family>/maps.py) ------------------------------------------------------

    def cells(self, shape: Sequence[int]) -> Tensor:
        """The query cell ``[P, ndim]`` (long) of every point on a map of ``shape``."""
        if len(shape) != self.points.shape[1]:
            raise ValueError(f'attention maps: a {len(shape)}-D token grid {tuple(shape)} for points given in '
                             f'{self.points.shape[1]} coordinates')
        size = torch.tensor(shape, dtype=torch.float64)
        return torch.minimum((self.points * size).floor(), size - 1).long()

    def map_grid(self, token_grid, frame: Sequence[int], op: str) -> TokenGrid:
        """A grid op's :class:`TokenGrid` (default: the frame is the map)."""
        grid = _grid_value(TokenGrid(tuple(frame)) if token_grid is None else token_grid, f'{op}: token_grid')
        if len(grid.shape) != len(frame) or grid.prefix:
            raise ValueError(f'{op}: token_grid {grid!r} does not fit the op\'s {len(frame)}-D token grid')
        return grid

    def flat_grids(self, token_grid, n_queries: int, n_keys: int, op: str) -> tuple[TokenGrid | str, TokenGrid | str]:
        """A flat op's query and key grids (or token-set names), checked against its token counts."""
        if token_grid is None:
            raise ValueError(f'{op} needs token_grid= (the query / key token grids) while attention maps are '
                             f'recorded: its tokens are flat, so the calling module must say where they lie')
        out = []
        for value, n, what in zip(grid_pair(token_grid), (n_queries, n_keys), ('query', 'key')):
            if isinstance(value, str):
                out.append(value)
                continue
            grid = _grid_value(value, f'{op}: the {what} token_grid')
            if grid.prefix + math.prod(grid.shape) != n or any(grid.origin):
                raise ValueError(f'{op}: the {what} token_grid {grid!r} does not hold its {n} tokens '
                                 f'(prefix + prod(shape) must equal them, origin 0)')
            out.append(grid)
        return out[0], out[1]

    def check_batch(self, batch: int, op: str) -> None:
        if self.batch is not None and batch != self.batch:
            raise ValueError(f'{op}: its batch ({batch}) is not the image batch ({self.batch}): windows folded into '
                             f'the batch of a flat op cannot be placed on the map')

    def grid_segments(self, grid: TokenGrid, frame: Sequence[int], rows: Tensor) -> dict[str, Tensor]:
        """Frame rows ``[B, P, h, *frame]`` -> ``{'map': [B, P, h, *grid.shape]}`` plus ``'padding'`` (the weight of
        frame keys off the map) where the frame reaches beyond it."""
        lead = rows.shape[:3]
        out = rows.new_zeros(*lead, *grid.shape)
        src, dst = [slice(None)] * 3, [slice(None)] * 3
        for n_f, n_m, o in zip(frame, grid.shape, grid.origin):
            lo, hi = max(0, -o), min(n_f, n_m - o)
            if hi <= lo:
                lo = hi = 0
            src.append(slice(lo, hi))
            dst.append(slice(lo + o, hi + o) if hi > lo else slice(0, 0))
        out[tuple(dst)] = rows[tuple(src)]
        segments = {'map': out}
        inside = all(o >= 0 and o + n_f <= n_m for n_f, n_m, o in zip(frame, grid.shape, grid.origin))
        if not inside:
            off_map = torch.ones(frame, dtype=torch.bool, device=rows.device)
            off_map[tuple(src[3:])] = False  # summed directly, not as a difference (no -1e-17 weights)
            segments['padding'] = torch.where(off_map, rows, 0).sum(tuple(range(3, rows.dim())))[..., None]
        return segments

    def frame_queries(self, grid: TokenGrid, frame: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The points' query cells in frame coordinates ``[P, ndim]`` (clamped where not covered) and ``[P]``
        whether the frame holds them."""
        cells = self.cells(grid.shape) - torch.tensor(grid.origin)
        limit = torch.tensor(list(frame))
        covered = ((cells >= 0) & (cells < limit)).all(1)
        return torch.minimum(cells.clamp_min(0), limit - 1), covered

    def flat_queries(self, grid: TokenGrid | str, n: int) -> Tensor:
        """Token indices of the queries: the points' cells on a grid, or every token of a named set."""
        if isinstance(grid, str):
            return torch.arange(n)
        cells = self.cells(grid.shape)
        flat = torch.zeros(cells.shape[0], dtype=torch.long)
        for axis, size in enumerate(grid.shape):
            flat = flat * size + cells[:, axis]
        return flat + grid.prefix

    def flat_segments(self, grid: TokenGrid | str, rows: Tensor, op: str) -> tuple[dict[str, Tensor], dict]:
        """Rows ``[B, P, h, M]`` over a flat op's keys -> segments (and ``via``, for a named key set)."""
        if isinstance(grid, str):
            if grid not in self._sets:
                raise ValueError(f'{op}: its keys are the token set {grid!r}, which no earlier op defined (an op '
                                 f'with token_grid=({grid!r}, ...) must come first)')
            return _compose(rows, self._sets[grid], op), {grid: rows}
        segments = {}
        if grid.prefix:
            segments['prefix'] = rows[..., :grid.prefix]
        segments[grid.name] = rows[..., grid.prefix:].reshape(*rows.shape[:3], *grid.shape)
        return segments, {}

    def define_set(self, name: str, segments: dict[str, Tensor]) -> None:
        """Rows ``[B, S, h, ...]`` of every token of set ``name`` (as queries) become its tokens' expansion."""
        self._sets[name] = {n: t.transpose(1, 2) for n, t in segments.items()}

    def add(self, partial: _Partial, lse: Tensor | None = None) -> None:
        """A call's rows; ``lse``, the op's returned log-sum-exp, lets :meth:`merge` find it."""
        (self._stack[-1][1] if self._stack else self._loose).append(partial)
        self._last = partial
        if lse is not None:
            self.bind_lse(lse)

    def bind_lse(self, lse: Tensor) -> None:
        """The log-sum-exp an op returned for the rows it just added (for :meth:`merge`)."""
        self._lses = [(r, p) for r, p in self._lses if r() is not None]
        self._lses.append((weakref.ref(lse), self._last))

    def merge(self, lses: Sequence[Tensor], total: Tensor) -> None:
        """:func:`ops.merge_attentions` of recorded calls: one softmax over the union of their keys."""
        parts = []
        for lse in lses:
            found = [p for r, p in self._lses if (t := r()) is not None and t.data_ptr() == lse.data_ptr()
                     and t.numel() == lse.numel()]
            if not found:
                return  # a partial attention that no recorded op made: nothing to combine
            parts.append(found[-1])
        group = self._stack[-1][1] if self._stack else self._loose
        if any(p not in group for p in parts) or len(set(map(id, parts))) != len(parts):
            return
        lse_all = torch.stack([p.lse for p in parts])
        finite = torch.isfinite(lse_all).any(0)
        top = torch.where(finite, torch.logsumexp(torch.where(finite, lse_all, 0), 0), float('-inf'))
        segments: dict[str, Tensor] = {}
        for p, lse in zip(parts, lse_all):
            scale = torch.where(finite, torch.exp(lse - torch.where(finite, top, 0)), 0)
            for name, t in p.segments.items():
                t = t * scale.reshape(*scale.shape, *([1] * (t.dim() - 3)))
                segments[name] = segments[name] + t if name in segments else t
        covered = parts[0].covered
        for p in parts[1:]:
            covered = covered & p.covered
        merged = _Partial('+'.join(p.kind for p in parts), parts[0].grid, covered, segments, top)
        first = min(group.index(p) for p in parts)
        for p in parts:
            group.remove(p)
        group.insert(first, merged)
        self._lses.append((weakref.ref(total), merged))

    # -- grouping by module ---------------------------------------------------------------------------------

    def _pre_hook(self, module: nn.Module, args) -> None:
        name = self._names.get(id(module))
        if name is not None:
            self._stack.append([name, []])

    def _post_hook(self, module: nn.Module, args, output) -> None:
        if self._names.get(id(module)) is not None and self._stack:
            name, partials = self._stack.pop()
            self._finish(name, partials)

    def _stage(self, name: str) -> int | None:
        for i, prefix in enumerate(self._stages):
            if name == prefix or name.startswith(prefix + '.'):
                return i
        return None

    def _finish(self, name: str, partials: list[_Partial]) -> None:
        if not partials:
            return
        combined: list[_Partial] = []
        for p in partials:
            if combined and combined[-1].joins(p):
                last = combined[-1]
                names = list(dict.fromkeys([*last.segments, *p.segments]))
                segs = {n: _where(p.covered, p.segments.get(n), last.segments.get(n)) for n in names}
                via = {n: _where(p.covered, t, last.via[n]) for n, t in p.via.items()}
                combined[-1] = _Partial(p.kind, p.grid, last.covered | p.covered, segs, None, p.normalized, via)
            else:
                combined.append(p)
        for p in combined:
            if not p.covered.all():
                raise RuntimeError(f'attention maps: layer {name or "<root>"} ({p.kind}) holds no query for some '
                                   f'points; a module passes a token_grid that does not cover its map')
        kinds = [p.kind for p in combined]
        for i, p in enumerate(combined):
            label = name or p.kind
            if len(combined) > 1:
                label = f'{label}:{p.kind}' + (f'.{kinds[:i].count(p.kind)}' if kinds.count(p.kind) > 1 else '')
            n = self._calls.get(label, 0)
            self._calls[label] = n + 1
            self.maps[label if n == 0 else f'{label}#{n}'] = self._record(label, p)

    def _record(self, name: str, p: _Partial) -> AttentionMap:
        primary = 'map' if 'map' in p.segments else next(
            (n for n in p.segments if n not in ('prefix', 'padding', 'extra')), next(iter(p.segments)))
        maps = p.segments[primary]
        extra = {n: t for n, t in p.segments.items() if n != primary}
        return AttentionMap(name, self._stage(name) if self._names is not None else None, p.kind, p.grid,
                            self.cells(p.grid), maps, tuple(maps.shape[3:]), extra, p.via, p.normalized)

    @contextmanager
    def _active(self) -> Iterator[Recording]:
        global active
        if active is not None:
            raise RuntimeError('attention maps are already being recorded (record_attention does not nest)')
        handles = []
        if self._names is not None:
            handles = [nn.modules.module.register_module_forward_pre_hook(self._pre_hook),
                       nn.modules.module.register_module_forward_hook(self._post_hook, always_call=True)]
        active = self
        try:
            yield self
            while self._stack:  # modules whose forward raised are closed by always_call; anything left: finish
                self._finish(*self._stack.pop())
            self._finish('', self._loose)
        finally:
            active = None
            for h in handles:
                h.remove()
            self._sets.clear()
            self._lses.clear()


@contextmanager
def record_attention(points: Sequence[Sequence[float]], image_size: Sequence[int], model: nn.Module | None = None,
                     batch: int | None = None) -> Iterator[Recording]:
    """Record the exact attention of the queries at ``points`` in every op called inside the block.

    ``points``: ``(x, y)`` pixel positions in an image of ``image_size = (H, W)``; pass the token grid itself as
    ``image_size`` to give cells directly. The yielded :class:`Recording`'s ``maps`` (name -> :class:`AttentionMap`)
    is filled when the block exits; see :class:`Recording` for ``model`` and ``batch``. Eager mode only.
    """
    rec = Recording(points, image_size, model, batch)
    with rec._active():
        yield rec


def current(op: str) -> Recording:
    """The active recording, for an op API that found ``active`` set; refuses compiled / traced calls."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        raise RuntimeError(f'{op}: attention maps are recorded in eager mode only; run the model uncompiled '
                           f'(outside torch.compile / torch.export / tracing) inside record_attention')
    return active
