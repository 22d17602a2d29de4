"""Pure-PyTorch tiled backend: fast on CPU, memory linear in tokens, explicit FlashAttention-style backward.

How it works (docs/design.md, 'Fused local attention'):

* Blocked patterns (windows that partition the grid once dilation groups are folded into the batch: a window
  covering the whole map, Swin/MaxViT blocks and grids) run as batched dense attention on SDPA's fused CPU
  kernel with the rpb as an additive bias (:mod:`.torch_blocks`); so do small maps that the window nearly covers
  (on CPU: one block over the whole map, the pattern as ``-inf`` bias entries); everything below is the general
  path.
* Dilation: per axis the tokens are permuted so that each dilation group is contiguous (group ``g`` holds the
  original indices ``g, g + d, ...``); inside a group the pattern is plain neighborhood attention.
* Tiles: each group is cut into query tiles of ``T`` tokens per axis (an N-D block of the grid). The keys a
  tile needs form one contiguous *halo* per axis, computed from :func:`ops.na.pattern.axis_window`; every tile's
  halo is widened to the same size so that all tiles go through one batched matmul (BLAS) of
  ``[T_q, D] x [D, H_k]`` with the exact pattern (window, causal, ``valid_shape``, padding) as a mask.
* Extra keys are appended to every tile's keys in the same softmax; relative position bias is gathered per
  (query, key) pair of the tile from ``table[key - query + k - 1]`` in group coordinates.
* Tiles are processed in chunks, so peak memory is bounded by the chunk budget plus O(tokens x halo / tile).
* Backward recomputes the probabilities from the saved log-sum-exp (no attention matrix is stored) and
  scatter-adds key/value gradients of overlapping halos with ``index_add_`` (deterministic on CPU, and
  deterministic on CUDA under ``torch.use_deterministic_algorithms(True)``).

Routing hook: a routed pattern (BiFormer) is a per-query-tile list of key tiles; with tokens permuted so that a
region is one tile it is the same chunk loop with ``k_flat`` built from the index list instead of the halos.

The tile size per axis is chosen by a small cost model (:func:`_choose_tiles`); strided/blocked patterns get
tiles that are multiples of the stride so that a tile shares one window (no masking waste).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..._registry import Backend
from ..pattern import NASpec, axis_window
from . import torch_blocks

__all__ = ['BACKEND', 'forward', 'backward', 'forward_with_dropout']

_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
# Upper bound on the elements of one chunk's score tensor [B * heads, tiles, T_q, H_k] (128K fp32 = 512 KiB: the
# backward's p, ds and operands stay in cache; 16 MiB chunks were 1.35x slower at 56x56, and at 2 threads 256K
# chunks ran the backward ~1.2x slower than 128K, 512K ~1.5x: bigger OpenMP regions do not pay for leaving cache).
_CHUNK_ELEMENTS = 1 << 17
# Upper bound on the elements of one flash chunk's gathered keys [B, heads, tiles, H_k, D] (256K fp32 = 1 MiB, as
# many for the values): small enough to stay in cache, and the forward's memory within ~2x of dense SDPA's
_FLASH_CHUNK_ELEMENTS = 1 << 18
# Plans whose bias indices (int32 per (query slot, halo key)) stay below this many elements keep them cached.
_CACHE_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class _Axis:
    """Tiling of one axis: tiles of ``tile`` queries (in permuted order) and their ``halo``-sized key ranges."""

    tile: int
    halo: int
    n_tiles: int
    q_index: torch.Tensor  # [n_tiles * tile] original index of every permuted query slot (clamped)
    q_real: torch.Tensor  # [n_tiles, tile] is the slot a real query (not padding of the last tile)
    inv: torch.Tensor  # [length] permuted slot of every original index
    k_index: torch.Tensor  # [n_tiles, halo] original index of every halo key (clamped)
    mask: torch.Tensor  # [n_tiles, tile, halo] may the query attend to the key
    rel: torch.Tensor  # [n_tiles, tile, halo] rpb table index (0 where masked)
    cls: torch.Tensor  # [n_tiles] pattern class: tiles of one class have the same mask and rel (CPU)
    rep: torch.Tensor  # [n_classes] one tile of every class (CPU)


def _halo(length: int, kernel: int, stride: int, dilation: int, causal: bool, tile: int, border: str = 'clamp'):
    """Per-tile halo start (group coordinates) and the common halo size for ``tile`` queries per tile."""
    first, count = axis_window(length, kernel, stride, dilation, causal, border=border)
    group_len = -(-length // dilation)
    tiles_per_group = -(-group_len // tile)
    padded = tiles_per_group * tile
    slot = torch.arange(dilation * padded)
    group, pos = slot // padded, slot % padded
    orig = pos * dilation + group
    real = orig < length
    orig_c = orig.clamp(max=length - 1)
    start = torch.where(real, first[orig_c] // dilation, 0)
    end = torch.where(real, start + count[orig_c], 0)
    lo = torch.where(real, start, padded).view(-1, tile).amin(1)
    hi = end.view(-1, tile).amax(1)
    lo = torch.minimum(lo, hi)  # tiles without a real query
    halo = max(int((hi - lo).max()), 1)
    return lo.clamp(max=padded - halo), halo, padded, pos, orig, real, start, end


@lru_cache(maxsize=256)
def _axis_plan(length: int, kernel: int, stride: int, dilation: int, causal: bool, valid: int, tile: int,
               device: str, border: str = 'clamp') -> _Axis:
    hstart, halo, padded, pos, orig, real, start, end = _halo(length, kernel, stride, dilation, causal, tile,
                                                              border)
    n_tiles = hstart.numel()
    key_pos = hstart[:, None] + torch.arange(halo)  # [n_tiles, halo] group coordinates
    key_group = (torch.arange(n_tiles) * tile // padded)[:, None]
    key_orig = key_pos * dilation + key_group
    key_real = key_orig < valid
    qpos, qreal = pos.view(n_tiles, tile, 1), real.view(n_tiles, tile, 1)
    kp = key_pos[:, None, :]
    mask = qreal & key_real[:, None, :] & (kp >= start.view(n_tiles, tile, 1)) & (kp < end.view(n_tiles, tile, 1))
    rel = torch.where(mask, kp - qpos + kernel - 1, 0)
    x = torch.arange(length)
    inv = (x % dilation) * padded + x // dilation
    # tiles whose queries see the same halo offsets with the same rpb offsets (all interior tiles of a sliding
    # window, and their twins in every dilation group) share one bias: a class
    _, cls = torch.unique(torch.where(mask, rel, -1).reshape(n_tiles, -1), dim=0, return_inverse=True)
    rep = torch.full((int(cls.max()) + 1,), n_tiles).scatter_reduce_(0, cls, torch.arange(n_tiles), 'amin')
    return _Axis(tile, halo, n_tiles, orig.clamp(max=length - 1).to(device), qreal.view(n_tiles, tile).to(device),
                 inv.to(device),
                 key_orig.clamp(max=length - 1).to(device), mask.to(device), rel.to(device), cls, rep)


def _tile_candidates(length: int, kernel: int, stride: int, dilation: int) -> list[int]:
    group_len = -(-length // dilation)
    cands = {min(stride * m, group_len) for m in range(1, 65) if stride * m <= max(32, stride)}
    if group_len <= 64:
        cands.add(group_len)
    return sorted(cands)


def _flash_tile_cost(tq: int, hk: int, head_dim: int) -> float:
    """Modelled CPU time (ns) of one (batch, head, tile) of the flash path, measured on x86 at head_dim 32: the
    kernel runs queries in blocks of 32 (a block pays for at least 16 rows), each with a fixed cost; gathering a
    halo key (k and v) or a query costs ~0.25 ns per float; the bias ~0.25 ns per pair; ~3 us per tile."""
    blocks, rows = -(-tq // 32), min(tq, 32)
    return (blocks * (max(rows, 16) * hk * 0.0625 * head_dim + 2000) + (2 * hk + 2 * tq) * 0.25 * head_dim
            + 0.25 * tq * hk + 3000)


@lru_cache(maxsize=256)
def _choose_tiles(shape: tuple[int, ...], spec: NASpec, head_dim: int, n_extra: int,
                  flash: bool = False) -> tuple[int, ...]:
    """Pick per-axis tile sizes minimising a simple cost model (matmul work + per-element and per-tile cost), of
    the explicit chunk math or (``flash``) of the fused kernel."""
    per_axis = []
    for axis, length in enumerate(shape):
        k, s, d, c = spec.kernel_size[axis], spec.stride[axis], spec.dilation[axis], spec.is_causal[axis]
        opts = []
        for t in _tile_candidates(length, k, s, d):
            lo, halo, padded = _halo(length, k, s, d, c, t, spec.border)[:3]
            opts.append((t, halo, lo.numel()))
        per_axis.append(opts)
    best, best_cost = None, math.inf
    for combo in _product(per_axis):
        tq = math.prod(t for t, _, _ in combo)
        hk = math.prod(h for _, h, _ in combo) + n_extra
        nt = math.prod(n for _, _, n in combo)
        if flash:
            cost = nt * _flash_tile_cost(tq, hk, head_dim)
        else:  # measured on CPU: small tiles run the batched matmuls inefficiently, and each tile has a fixed cost
            cost = nt * (tq * hk * (2 * head_dim + 24) * max(1., 16 / tq) + 70000)
        if cost < best_cost:
            best, best_cost = tuple(t for t, _, _ in combo), cost
    return best


def _product(lists):
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for rest in _product(lists[1:]):
            yield (head, *rest)


class _Plan:
    """All axes' tilings combined: flat token indices of query slots and halo keys, and the tiles grouped by
    pattern class (the N-D class of a tile is its per-axis classes): every chunk of tiles lies in one class, so
    its mask and rpb are one ``[tq, hk]`` bias per head, shared by the chunk's tiles and the batch."""

    def __init__(self, shape: tuple[int, ...], spec: NASpec, head_dim: int, n_extra: int, device: str,
                 flash: bool = False):
        tiles = _choose_tiles(shape, spec, head_dim, n_extra, flash)
        valid = spec.valid_shape or shape
        self.axes = [
            _axis_plan(n, spec.kernel_size[a], spec.stride[a], spec.dilation[a], spec.is_causal[a], valid[a],
                       tiles[a], device, spec.border)
            for a, n in enumerate(shape)]
        self.ndim = len(shape)
        self.n_tiles = math.prod(ax.n_tiles for ax in self.axes)
        self.tq = math.prod(ax.tile for ax in self.axes)
        self.hk = math.prod(ax.halo for ax in self.axes)
        strides = [math.prod(shape[a + 1:]) for a in range(self.ndim)]
        self.rpb_strides = [math.prod(2 * k - 1 for k in spec.kernel_size[a + 1:]) for a in range(self.ndim)]
        self.rpb_size = math.prod(2 * k - 1 for k in spec.kernel_size)  # index of the masked (-inf) bias entry
        # tiles sorted by class (stable): tile ``order[i]`` (row-major over the axes' tiles) is processed i-th
        n_cls = [int(ax.rep.numel()) for ax in self.axes]
        cls = self._combine([(ax.cls * math.prod(n_cls[a + 1:]))[:, None] for a, ax in enumerate(self.axes)])
        cls = cls.reshape(-1)
        order = torch.argsort(cls, stable=True)
        present, counts = torch.unique_consecutive(cls[order], return_counts=True)
        ends = counts.cumsum(0).tolist()
        self.classes = [(e - n, e) for e, n in zip(ends, counts.tolist())]  # tile ranges [t0, t1) per class
        self._cls_tiles = []  # per class: the per-axis representative tiles
        for c in present.tolist():
            sel = []
            for a in reversed(range(self.ndim)):
                sel.append(int(self.axes[a].rep[c % n_cls[a]]))
                c //= n_cls[a]
            self._cls_tiles.append(sel[::-1])
        dev_order = order.to(device)
        self.q_flat = self._combine([ax.q_index.view(ax.n_tiles, ax.tile) * st
                                     for ax, st in zip(self.axes, strides)])[dev_order]
        self.k_flat = self._combine([ax.k_index * st for ax, st in zip(self.axes, strides)])[dev_order]
        self.q_pad = (self._combine([(~ax.q_real).long() for ax in self.axes]) > 0)[dev_order].reshape(-1)
        # slot (position of its tile * tq + i) of every original token, row-major over the grid
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel())).to(device)
        inv = torch.zeros((), dtype=torch.long, device=device)
        tile_strides = [math.prod(ax.n_tiles for ax in self.axes[a + 1:]) for a in range(self.ndim)]
        in_strides = [math.prod(ax.tile for ax in self.axes[a + 1:]) for a in range(self.ndim)]
        tile_of = torch.zeros((), dtype=torch.long, device=device)
        for a, ax in enumerate(self.axes):
            tile_of = tile_of[..., None] + (ax.inv // ax.tile) * tile_strides[a]
            inv = inv[..., None] + (ax.inv % ax.tile) * in_strides[a]
        self.inv = (rank[tile_of] * self.tq + inv).reshape(-1)
        # per query slot: does it see any key (the N-D window is the product of the axes' windows)
        seen = self._combine([(~ax.mask.any(-1)).long() for ax in self.axes]) == 0
        self.seen = seen[dev_order].reshape(-1)
        self.every_query_sees_a_key = bool(self.seen[~self.q_pad].all())
        self._cache_bias = len(self.classes) * self.tq * self.hk <= _CACHE_ELEMENTS
        self._bias_index: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._n_tokens, self._device = math.prod(shape), device
        self._rows: dict[tuple[int, int, int], _Rows] = {}

    def _combine(self, per_axis: list[torch.Tensor]) -> torch.Tensor:
        """Sum per-axis ``[n_a, m_a]`` tables into ``[prod n_a, prod m_a]`` (row-major on both)."""
        n = self.ndim
        out = torch.zeros((), dtype=per_axis[0].dtype, device=per_axis[0].device)
        for a, t in enumerate(per_axis):
            view = [1] * (2 * n)
            view[a], view[n + a] = t.shape
            out = out + t.view(view)
        return out.reshape(math.prod(t.shape[0] for t in per_axis), -1)

    def _outer(self, tables: list[torch.Tensor], op) -> torch.Tensor:
        """Combine per-axis ``[T_a, H_a]`` into ``[tq, hk]`` with ``op``."""
        n = self.ndim
        out = None
        for a, t in enumerate(tables):
            view = [1] * (2 * n)
            view[a], view[n + a] = t.shape
            t = t.view(view)
            out = t if out is None else op(out, t)
        return out.reshape(self.tq, self.hk)

    def bias_index(self, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``([tq * hk] int index into the bias table, [tq, hk] mask)`` of a class: the rpb offset where the
        pattern allows the pair, ``rpb_size`` (the -inf entry) where it does not."""
        got = self._bias_index.get(cls)
        if got is None:
            sel = self._cls_tiles[cls]
            mask = self._outer([ax.mask[s] for ax, s in zip(self.axes, sel)], torch.logical_and)
            rel = self._outer([ax.rel[s] * st for ax, s, st in zip(self.axes, sel, self.rpb_strides)], torch.add)
            got = torch.where(mask, rel, self.rpb_size).reshape(-1).int(), mask
            if self._cache_bias:
                self._bias_index[cls] = got
        return got

    def rows(self, batch: int, heads: int, per_tile: int, budget: int) -> _Rows:
        """Row indices of ``batch`` x ``heads`` token rows in chunks of tiles of at most ``budget // per_tile``
        tiles (cached for the last few)."""
        key = (batch, heads, per_tile, budget)
        got = self._rows.get(key)
        if got is None:
            if len(self._rows) >= 4:
                self._rows.pop(next(iter(self._rows)))
            got = self._rows[key] = _Rows(self, batch, heads, per_tile, budget)
        return got

    def chunks(self, per_tile: int, budget: int):
        """``(t0, t1, class)``: runs of at most ``budget // per_tile`` consecutive tiles of one class."""
        step = max(1, budget // max(1, per_tile))
        for c, (s, e) in enumerate(self.classes):
            for t0 in range(s, e, step):
                yield t0, min(t0 + step, e), c


class _Rows:
    """Row indices in the inputs' own token-row layout (``[B * N * H, D]``, or ``[B * N, H * D]`` with ``heads``
    1), so that no heads-first copy is made: ``q_rows`` reads every query slot once, chunk after chunk (each chunk
    ``[B, H, c * tq]``), so a chunk's query-side operands are one contiguous slice; ``q_inv`` puts the slots back
    into token rows; ``k_rows[i]`` reads chunk ``i``'s halo keys ``[B, H, c * hk]``."""

    def __init__(self, plan: _Plan, batch: int, heads: int, per_tile: int, budget: int):
        n, dev = plan._n_tokens, plan._device
        base = (torch.arange(batch, device=dev)[:, None, None] * n * heads
                + torch.arange(heads, device=dev)[None, :, None])  # [B, H, 1]: row of token 0

        def rows(tokens):
            return (base + tokens.reshape(1, 1, -1) * heads).reshape(-1)

        self.chunks, q_rows, q_pad, self.k_rows = [], [], [], []
        offset = 0
        for t0, t1, cls in plan.chunks(per_tile, budget):
            self.chunks.append((t0, t1, cls, offset))
            q_rows.append(rows(plan.q_flat[t0:t1]))
            q_pad.append(plan.q_pad[t0 * plan.tq:t1 * plan.tq].expand(batch, heads, -1).reshape(-1))
            self.k_rows.append(rows(plan.k_flat[t0:t1]))
            offset += q_rows[-1].numel()
        self.q_rows, self.q_pad = torch.cat(q_rows), torch.cat(q_pad)
        real = (~self.q_pad).nonzero()[:, 0]
        self.q_inv = torch.empty(batch * n * heads, dtype=torch.long, device=dev).scatter_(
            0, self.q_rows[real], real)


@lru_cache(maxsize=16)
def _plan(shape: tuple[int, ...], spec: NASpec, head_dim: int, n_extra: int, device: str,
          flash: bool = False) -> _Plan:
    return _Plan(shape, spec, head_dim, n_extra, device, flash)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _heads_first(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, *S, H, D] -> contiguous [B, H, N, D] in ``dtype``."""
    b, h, d = x.shape[0], x.shape[-2], x.shape[-1]
    return x.reshape(b, -1, h, d).transpose(1, 2).to(dtype).contiguous()


def _bias_table(rpb: torch.Tensor | None, heads: int, size: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[heads or 1, size + 1]``: the flattened rpb (or zeros) with a trailing -inf entry for masked pairs."""
    if rpb is None:
        table = torch.zeros(1, size + 1, dtype=dtype, device=device)
        table[:, -1] = float('-inf')
        return table
    return torch_blocks.rpb_table(rpb, heads, dtype)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[:, :, index]`` for contiguous ``x`` of shape ``[B, H, N, ...]``, as one row gather on a 2-D view (on CPU
    about 5x faster than ``index_select`` along dim 1 of a 3-D view)."""
    b, h, n = x.shape[:3]
    offsets = torch.arange(0, b * h * n, n, device=x.device)
    out = x.reshape(b * h * n, -1).index_select(0, (offsets[:, None] + index).reshape(-1))
    return out.view(b, h, index.numel(), *x.shape[3:])


def _bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[:, index]`` for the ``[heads, size + 1]`` bias table, as a 1-D gather."""
    rows, size = table.shape
    offsets = torch.arange(0, rows * size, size, device=table.device)
    return table.reshape(-1).index_select(0, (offsets[:, None] + index).reshape(-1)).view(rows, -1)


def _class_bias(plan: _Plan, table: torch.Tensor, cls: int) -> torch.Tensor:
    """``[heads or 1, tq, hk]``: the bias (rpb; -inf where masked) of a class's tiles."""
    return _bias(table, plan.bias_index(cls)[0]).view(-1, plan.tq, plan.hk)


def _run(q, k, v, spec, scale, rpb, add_k, add_v, dropout_p: float = 0.0):
    """Shared forward; differentiable through autograd (used with ``dropout_p > 0``), else run under no_grad."""
    b, *shape, h, d = q.shape
    dtype = _compute_dtype(q)
    plan = _plan(tuple(shape), spec, d, 0 if add_k is None else add_k.shape[1], str(q.device))
    qf, kf, vf = _heads_first(q, dtype), _heads_first(k, dtype), _heads_first(v, dtype)
    table = _bias_table(rpb, h, plan.rpb_size, dtype, q.device)
    ak = None if add_k is None else add_k.transpose(1, 2).to(dtype)  # [B, H, E, D]
    av = None if add_v is None else add_v.transpose(1, 2).to(dtype)
    outs, lses = [], []
    for t0, t1, cls in plan.chunks(b * h * plan.tq * plan.hk, _CHUNK_ELEMENTS):
        c = t1 - t0
        qt = _take(qf, plan.q_flat[t0:t1].reshape(-1)).mul_(scale)  # [B, H, c*tq, D]
        kidx = plan.k_flat[t0:t1].reshape(-1)
        kh = _take(kf, kidx).view(b, h, c, plan.hk, -1)
        vh = _take(vf, kidx).view(b, h, c, plan.hk, -1)
        s = qt.view(b, h, c, plan.tq, -1) @ kh.transpose(-1, -2)
        s = s + _class_bias(plan, table, cls)[:, None]
        se = None if ak is None else (qt @ ak.transpose(-1, -2)).view(b, h, c, plan.tq, -1)
        with torch.no_grad():
            m = s.amax(-1) if se is None else torch.maximum(s.amax(-1), se.amax(-1))
            m = torch.where(torch.isfinite(m), m, 0.)[..., None]
        p = torch.exp(s - m) if torch.is_grad_enabled() else s.sub_(m).exp_()
        denom = p.sum(-1)
        if se is not None:
            pe = torch.exp(se - m)
            denom = denom + pe.sum(-1)
        # the inner where keeps 1/0 out of the graph: a query that sees no key must not send NaN into dk/dv
        inv_denom = torch.where(denom > 0, 1 / torch.where(denom > 0, denom, 1.), 0.)[..., None]
        if dropout_p > 0:
            p = torch.nn.functional.dropout(p, dropout_p)
        o = p @ vh
        if se is not None:
            if dropout_p > 0:
                pe = torch.nn.functional.dropout(pe, dropout_p)
            o = o + (pe.view(b, h, c * plan.tq, -1) @ av).view(o.shape)
        outs.append((o * inv_denom).view(b, h, c * plan.tq, -1))
        lses.append((m[..., 0] + torch.log(denom)).view(b, h, -1))
    out = _take(torch.cat(outs, 2), plan.inv)
    lse = _take(torch.cat(lses, 2), plan.inv)
    out = out.transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1]).to(q.dtype)
    lse = lse.transpose(1, 2).reshape(b, *shape, h)
    return out, lse


def _run_flash(q, k, v, spec, scale, rpb, add_k, add_v):
    """Inference forward on CPU: each chunk of tiles of one class is one call of SDPA's fused flash kernel, the
    tiles folded into its batch, in its own ``[batch, tokens, heads, head_dim]`` layout (the gathers read the
    inputs' rows directly: no heads-first copies), with the class's ``[heads, tq, hk]`` bias broadcast over the
    batch and the tiles (one small, cached mask instead of one per tile: 56x56 DiNAT-T stage 1, batch 4, 1 thread:
    34 -> 21 ms). The row indices are cached per plan and batch (:class:`_Rows` with all heads in a row), the
    queries gathered once for all chunks, and a class's bias gathered once for its run of chunks."""
    b, *shape, h, d = q.shape
    n, dtype = math.prod(shape), _compute_dtype(q)
    n_extra = 0 if add_k is None else add_k.shape[1]
    plan = _plan(tuple(shape), spec, d, n_extra, str(q.device), True)
    tq, hk = plan.tq, plan.hk
    rows = plan.rows(b, 1, b * (hk + n_extra) * h * d, _FLASH_CHUNK_ELEMENTS)
    qs = q.reshape(b * n, h * d).index_select(0, rows.q_rows)  # token rows, all heads, chunk by chunk
    kn, vn = k.reshape(b * n, h * d), v.reshape(b * n, h * d)
    table = _bias_table(rpb, h, plan.rpb_size, dtype, q.device)
    ak = None if add_k is None else add_k.to(dtype)[:, None]  # [B or 1, 1, E, H, D]
    av = None if add_v is None else add_v.to(dtype)[:, None]
    outs, lses = [], []
    bias_cls = None
    for i, (t0, t1, cls, off) in enumerate(rows.chunks):
        c = t1 - t0
        kh = kn.index_select(0, rows.k_rows[i]).to(dtype).view(b, c, hk, h, d)
        vh = vn.index_select(0, rows.k_rows[i]).to(dtype).view(b, c, hk, h, d)
        if cls != bias_cls:
            bias, bias_cls = _class_bias(plan, table, cls)[None], cls  # [1, H or 1, tq, hk]
            if ak is not None:
                bias = torch.nn.functional.pad(bias, (0, n_extra))
        if ak is not None:
            kh = torch.cat([kh, ak.expand(b, c, n_extra, h, d)], 2)
            vh = torch.cat([vh, av.expand(b, c, n_extra, h, d)], 2)
        o, lse = _FLASH(qs[off:off + b * c * tq].to(dtype).view(b * c, tq, h, d).transpose(1, 2),
                        kh.view(b * c, -1, h, d).transpose(1, 2), vh.view(b * c, -1, h, d).transpose(1, 2),
                        attn_mask=bias, scale=scale)
        outs.append(o.transpose(1, 2).reshape(b * c * tq, h * d))
        lses.append(lse.transpose(1, 2).reshape(b * c * tq, h))
    del qs  # freed before the outputs are put together: the peak stays that of per-chunk query gathers
    out = torch.cat(outs).index_select(0, rows.q_inv).view(b, n, h * d)
    lse = torch.cat(lses).index_select(0, rows.q_inv).view(b, n, h)
    if n_extra == 0 and not plan.every_query_sees_a_key:
        lse = lse.masked_fill(~plan.seen[plan.inv][:, None], float('-inf'))  # flash gives 0 (and output 0) there
    return out.reshape(*q.shape[:-1], v.shape[-1]).to(q.dtype), lse.reshape(b, *shape, h)


def _layout(q: torch.Tensor, spec: NASpec) -> torch_blocks.Layout | None:
    """The batched dense path's layout: blocked patterns anywhere, small nearly covered maps on CPU."""
    shape, device = tuple(q.shape[1:-2]), str(q.device)
    lay = torch_blocks.layout(shape, spec, device)
    if lay is None and q.device.type == 'cpu':
        lay = torch_blocks.dense_layout(shape, spec, device)
    return lay


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: NASpec, scale: float,
            rpb: torch.Tensor | None = None, add_k: torch.Tensor | None = None,
            add_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(out [B, *S, H, D] in q.dtype, lse [B, *S, H])``; lse is float32 (float64 for float64 inputs)."""
    with torch.no_grad():
        lay = _layout(q, spec)
        if lay is not None:
            return torch_blocks.forward(q, k, v, lay, scale, rpb, add_k, add_v)
        if q.device.type == 'cpu':
            return _run_flash(q, k, v, spec, scale, rpb, add_k, add_v)
        return _run(q, k, v, spec, scale, rpb, add_k, add_v)


def forward_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: NASpec, scale: float,
                         rpb: torch.Tensor | None, add_k: torch.Tensor | None, add_v: torch.Tensor | None,
                         dropout_p: float) -> torch.Tensor:
    """Attention with dropout on the probabilities, differentiable through autograd (saves per-tile weights)."""
    return _run(q, k, v, spec, scale, rpb, add_k, add_v, dropout_p)[0]


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, spec: NASpec, scale: float, rpb: torch.Tensor | None = None,
             add_k: torch.Tensor | None = None, add_v: torch.Tensor | None = None,
             grad_lse: torch.Tensor | None = None, need_rpb: bool = True, need_extra: bool = True) -> tuple:
    """Gradients ``(dq, dk, dv, drpb, dadd_k, dadd_v)`` (``None`` for absent or unneeded ones), recomputed from
    ``lse``; the extra tokens still contribute to ``dq`` when their own gradients are not needed."""
    with torch.no_grad():
        lay = _layout(q, spec)
        # a small map's dense layout backs its backward with the flash kernel; where that cannot serve (the rpb
        # gradient or grad_lse: explicit math), its bands (DiNAT-T's 14x14 stage, 1 thread, batch 4: 6.5 ms
        # against 7.9 ms in the query tiles), else the query tiles, which do less work than the whole map
        explicit = (need_rpb and rpb is not None) or grad_lse is not None
        if lay is not None and (lay.pair is None or not explicit or lay.bands is not None and add_k is None):
            return torch_blocks.backward(grad_out, q, k, v, out, lse, lay, scale, rpb, add_k, add_v, grad_lse,
                                         need_rpb, need_extra)
        return _backward(grad_out, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse,
                         need_rpb and rpb is not None, need_extra and add_k is not None)


def _backward(grad_out, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse, need_rpb, need_extra):
    """The explicit backward, chunk by chunk of tiles of one class. The query side (``q * scale``, ``dO``, lse and
    ``rowsum(dO * O)``) is gathered once for all chunks, straight from the inputs' token rows (:class:`_Rows`: no
    heads-first copies); each chunk gathers its key and value halos from the token rows and scatters ``dk``, ``dv``
    back with ``index_add_``; the rpb gradient is summed per class and scattered into the table once per class."""
    b, *shape, h, d = q.shape
    dv_ = v.shape[-1]
    dtype = _compute_dtype(q)
    n_extra = 0 if add_k is None else add_k.shape[1]
    plan = _plan(tuple(shape), spec, d, n_extra, str(q.device))
    tq, hk = plan.tq, plan.hk
    rows = plan.rows(b, h, b * h * tq * hk, _CHUNK_ELEMENTS)
    qs = q.reshape(-1, d).index_select(0, rows.q_rows).to(dtype).mul_(scale)  # chunk by chunk [B, H, c*tq, D]
    dos = grad_out.reshape(-1, dv_).index_select(0, rows.q_rows).to(dtype)
    delta = (grad_out.to(dtype) * out.to(dtype)).sum(-1)  # rowsum(dO * O) [B, *S, H]
    if grad_lse is not None:
        delta = delta - grad_lse.to(dtype)
    lsef = lse.to(dtype)
    lsef = torch.where(torch.isfinite(lsef), lsef, float('inf'))  # rows that see nothing get p = 0
    stats = torch.stack([lsef, delta], -1).reshape(-1, 2).index_select(0, rows.q_rows)
    stats[:, 0].masked_fill_(rows.q_pad, float('inf'))  # padding slots of the last tiles: p = 0
    kf, vf = k.reshape(-1, d).to(dtype), v.reshape(-1, dv_).to(dtype)  # token rows [B * N * H, D]
    dk, dv = torch.zeros_like(kf), torch.zeros_like(vf)
    dqs = torch.empty_like(qs)
    table = _bias_table(rpb, h, plan.rpb_size, dtype, q.device)
    ak = None if add_k is None else add_k.transpose(1, 2).to(dtype)  # [B or 1, H, E, D]
    av = None if add_v is None else add_v.transpose(1, 2).to(dtype)
    dak = torch.zeros_like(ak) if need_extra else None
    dav = torch.zeros_like(av) if need_extra else None
    dbias = {}  # class -> [H, tq, hk] sum over the batch and the class's tiles of ds
    bias, bias_cls = None, None
    for i, (t0, t1, cls, off) in enumerate(rows.chunks):
        c = t1 - t0
        m = b * h * c
        part = slice(off, off + m * tq)
        qc, doc = qs[part].view(m, tq, d), dos[part].view(m, tq, dv_)
        st = stats[part].view(b, h, c, tq, 2)
        lse_t, delta_t = st[..., :1], st[..., 1:]
        kh = kf.index_select(0, rows.k_rows[i]).view(m, hk, d)
        vh = vf.index_select(0, rows.k_rows[i]).view(m, hk, dv_)
        if cls != bias_cls:
            bias, bias_cls = _class_bias(plan, table, cls)[:, None], cls  # [H or 1, 1, tq, hk]
        # p = exp(q k^T + bias - lse); see torch_blocks.probabilities. A plain bmm and in-place adds: one
        # [m, tq, hk] buffer fewer than baddbmm_ onto a materialised (bias - lse), and no slower
        p = torch.bmm(qc, kh.transpose(1, 2)).view(b, h, c, tq, hk).add_(bias).sub_(lse_t)
        p = torch_blocks.probabilities(p.view(m, tq, hk))
        ds = torch.bmm(doc, vh.transpose(1, 2)).view(b, h, c, tq, hk).sub_(delta_t).mul_(p.view(b, h, c, tq, hk))
        ds3 = ds.view(m, tq, hk)
        dq = torch.bmm(ds3, kh, out=dqs[part].view(m, tq, d))
        dk.index_add_(0, rows.k_rows[i], torch.bmm(ds3.transpose(1, 2), qc).view(-1, d))
        dv.index_add_(0, rows.k_rows[i], torch.bmm(p.transpose(1, 2), doc).view(-1, dv_))
        if need_rpb:
            got = ds.sum(0).sum(1)
            if cls in dbias:
                dbias[cls] += got
            else:
                dbias[cls] = got
        if ak is not None:
            qe, doe = qc.view(b, h, c * tq, d), doc.view(b, h, c * tq, dv_)
            pe = torch_blocks.probabilities((qe @ ak.transpose(-1, -2)).sub_(lse_t.reshape(b, h, -1, 1)))
            dse = (doe @ av.transpose(-1, -2)).sub_(delta_t.reshape(b, h, -1, 1)).mul_(pe)  # [B, H, c*tq, E]
            dq.view(b, h, c * tq, d).add_(dse @ ak)
            if need_extra:
                dak += (dse.transpose(-1, -2) @ qe).sum(0, keepdim=True) if ak.shape[0] < b else (
                    dse.transpose(-1, -2) @ qe)
                dav += (pe.transpose(-1, -2) @ doe).sum(0, keepdim=True) if av.shape[0] < b else (
                    pe.transpose(-1, -2) @ doe)
    dq = dqs.index_select(0, rows.q_inv).mul_(scale).view(q.shape).to(q.dtype)
    dk, dv = dk.view(k.shape).to(k.dtype), dv.view(v.shape).to(v.dtype)
    drpb = None
    if need_rpb:  # every class's pairs share their rpb offsets: one scatter per class
        dtable = torch.zeros_like(table)
        size = dtable.shape[1]
        heads = torch.arange(0, h * size, size, device=q.device)[:, None]
        for cls, got in dbias.items():
            dtable.view(-1).index_add_(0, (heads + plan.bias_index(cls)[0]).reshape(-1), got.reshape(-1))
        drpb = dtable[:, :-1].reshape(rpb.shape).to(rpb.dtype)
    if dak is not None:
        dak = dak.transpose(1, 2).to(add_k.dtype)
        dav = dav.transpose(1, 2).to(add_v.dtype)
    return dq, dk, dv, drpb, dak, dav


BACKEND = Backend('na', 'torch', forward, backward, forward_with_dropout=forward_with_dropout, dropout=True,
                  priority=10)
