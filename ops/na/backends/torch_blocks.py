"""The torch backend's exact fast path for patterns whose windows partition the grid: batched dense attention.

A pattern is *blocked* when on every axis, once the dilation groups are folded into the batch, each query's keys
are exactly its block of ``k`` consecutive group tokens: a non-causal axis with ``border='clamp'``, ``length %
dilation == 0`` and either ``k == length / dilation`` (the window covers the whole axis or group: plain attention,
e.g. DiNAT's 7x7 stage and its dilated 56/d8, 28/d4, 14/d2 layers) or ``stride == k`` with ``k`` dividing the group
length (Swin/MaxViT windows, MaxViT grids). Neighborhood attention is then dense attention inside each block with
the rpb as one additive ``[heads, n, n]`` bias (``table[key - query + k - 1]`` is the same in every block), and
``valid_shape`` as ``-inf`` entries of a per-block bias.

Forward: SDPA's fused CPU flash kernel (``aten._scaled_dot_product_flash_attention_for_cpu``), which also returns
the log-sum-exp the backward needs; memory linear in tokens (blocks of ``n`` tokens). Backward: the same kernel's
backward when no bias gradient and no ``grad_lse`` is needed, else explicit FlashAttention math in chunks of blocks
(``ds = p * (dO V^T - delta)``; the rpb gradient is ``ds`` summed over blocks and batch, scattered into the table).
Extra keys are appended to every block's keys (zero bias), their gradients summed over blocks.

Small maps that the window nearly covers (:func:`dense_layout`: at most :data:`DENSE_TOKENS` tokens, dense pairs
at most :data:`DENSE_BOUND` x the pattern's) run as one block over the whole map with the pattern as ``-inf``
entries of the bias (a pair mask): dense attention on the flash kernel costs them little more than the pattern
(DiNAT-T's 14x14 stage, bound 4: query tiles with their halos were slower, forward and flash backward); the
backend sends their explicit-math backward (rpb gradient, ``grad_lse``) to its query tiles, which do less work,
unless the layout has bands of whole rows (:func:`_bands`): each band's queries and the token range of its keys are
slices of the map, skipping the pairs outside the range; forward one flash call per band, explicit backward band by
band.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..pattern import NASpec, dense_mask, dense_rpb_index

__all__ = ['Layout', 'layout', 'dense_layout', 'forward', 'backward', 'probabilities']

_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_FLASH_BWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
# Upper bound on one backward chunk's logits [blocks, heads, query rows, n + extra] (256K fp32 = 1 MiB: in the
# 2 MiB L2 with its operands; 1 thread, batch 4, interleaved runs, rpb gradient: DiNAT-T's 7x7 stage backward 2.2 ms
# against 2.85 ms with 64K chunks and 2.2 ms with 2M, its 14x14 dilation-2 layer 5.1 against 6.1 and 4.9 ms; 4M
# chunks were slower at 7x7 in an earlier session: 5.6 against 4.1 ms with 64K)
_CHUNK_ELEMENTS = 1 << 18
# dense_layout's limits: tokens, and dense pairs / pattern pairs
DENSE_TOKENS, DENSE_BOUND = 256, 4.0
# Queries per band of a dense layout's forward (whole rows, at most this many): one query block of the flash kernel
# (it splits fewer than 192 queries into blocks of 32; a partial block costs about a full one). DiNAT-T's 14x14
# stage, batch 4, 1 thread, interleaved: 7 bands of 2 rows 2.12 ms, 3 bands 2.30, 2 bands 2.90, one call over the
# map 2.89 (dense SDPA without bias: 2.16)
BAND_QUERIES = 32
# Lower clamp of the backward's softmax exponent: exp(-87) = 1.6e-38 is still a normal float32, and torch.exp is
# ~9x slower on -inf and ~100x slower where its result is denormal; masked pairs are zeroed by the mask instead
EXP_MIN = -87.0
# Probabilities below this are dropped (set to 0) in the backward: far below float32's resolution of the sums they
# enter (a row's largest probability is at least 1 / keys), and large enough that their products with gradients of
# ordinary size (>= 1e-18) stay normal floats (see probabilities)
P_MIN = 1e-20


@dataclass(frozen=True)
class Layout:
    """How a blocked pattern maps ``[B, *S, H, D]`` onto ``[B * W, H, n, D]`` blocks."""

    view: tuple[int, ...]  # per axis (blocks per group, k, dilation), flattened
    perm: tuple[int, ...]  # permutation of [B, *view, H, D] to [B, (blocks, dilation) per axis, k per axis, H, D]
    inv_perm: tuple[int, ...]
    n_blocks: int  # W: blocks per image (over all dilation groups)
    n: int  # tokens per block
    rel: torch.Tensor  # [n, n] flat rpb index of (query, key) inside a block (pair layouts: table size if masked)
    valid: torch.Tensor | None  # [W, n] key validity per block (valid_shape), None when every key is real
    pair: torch.Tensor | None = None  # [n, n] may query i attend to key j (dense_layout), None: every pair
    bands: tuple[Band, ...] | None = None  # dense_layout's forward in bands of rows (see _bands), None: one call


@dataclass(frozen=True)
class Band:
    """Queries ``[q0, q1)`` of a dense layout (whole rows of the map's first axis, row-major tokens) and the one
    contiguous token range ``[k0, k1)`` that holds all their keys: a slice of the map, so no gather."""

    q0: int
    q1: int
    k0: int
    k1: int
    rel: torch.Tensor  # [(q1 - q0) * (k1 - k0)] flat rpb index (table size where masked)


def _axis(length: int, k: int, s: int, d: int, causal: bool, border: str) -> int | None:
    """Blocks per dilation group on one axis, or None when the axis' windows do not partition it."""
    if causal or border != 'clamp' or length % d:
        return None
    group = length // d
    if k == group:
        return 1
    if s == k and group % k == 0:
        return group // k
    return None


def _perms(m: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """:attr:`Layout.perm` and its inverse for ``m`` axes."""
    perm = (0, *(x for a in range(m) for x in (1 + 3 * a, 3 + 3 * a)), *(2 + 3 * a for a in range(m)), 1 + 3 * m,
            2 + 3 * m)
    return perm, tuple(sorted(range(len(perm)), key=perm.__getitem__))


@lru_cache(maxsize=128)
def layout(shape: tuple[int, ...], spec: NASpec, device: str) -> Layout | None:
    """The block layout of ``spec`` on grid ``shape``, or None when the pattern is not blocked (see module doc)."""
    if any(isinstance(x, torch.SymInt) for x in (*shape, *(spec.valid_shape or ()))):
        return None
    blocks = []
    for a, length in enumerate(shape):
        nb = _axis(length, spec.kernel_size[a], spec.stride[a], spec.dilation[a], spec.is_causal[a], spec.border)
        if nb is None:
            return None
        blocks.append(nb)
    m = len(shape)
    ks, ds = spec.kernel_size, spec.dilation
    view = tuple(x for a in range(m) for x in (blocks[a], ks[a], ds[a]))
    perm, inv_perm = _perms(m)
    n = math.prod(ks)
    rel_strides = [math.prod(2 * x - 1 for x in ks[a + 1:]) for a in range(m)]
    rel, valid = torch.zeros((), dtype=torch.long), torch.ones((), dtype=torch.bool)
    for a in range(m):  # rel: [q per axis, k per axis]; valid: [(blocks, dilation) per axis, k per axis]
        pos = torch.arange(ks[a])
        shape_r = [1] * (2 * m)
        shape_r[a] = shape_r[m + a] = ks[a]
        rel = rel + ((pos[None, :] - pos[:, None] + ks[a] - 1) * rel_strides[a]).view(shape_r)
        if spec.valid_shape is not None:
            orig = (torch.arange(blocks[a])[:, None, None] * ks[a] + pos) * ds[a] + torch.arange(ds[a])[:, None]
            shape_v = [1] * (3 * m)
            shape_v[2 * a], shape_v[2 * a + 1], shape_v[2 * m + a] = blocks[a], ds[a], ks[a]
            valid = valid & (orig < spec.valid_shape[a]).view(shape_v)
    rel = rel.reshape(n, n)
    if spec.valid_shape is None:
        valid = None
    else:
        valid = valid.reshape(-1, n)
        if not bool(valid.any(-1).all()):
            return None  # a block without real keys: its queries see nothing (the general path handles that)
    return Layout(view, perm, inv_perm, math.prod(blocks) * math.prod(ds), n, rel.to(device),
                  None if valid is None else valid.to(device))


@lru_cache(maxsize=32)
def dense_layout(shape: tuple[int, ...], spec: NASpec, device: str) -> Layout | None:
    """One block covering a small map that the window nearly covers, with the pattern as a pair mask (see module
    doc), or None (too large, too sparse, or a query that sees no key)."""
    if any(isinstance(x, torch.SymInt) for x in (*shape, *(spec.valid_shape or ()))):
        return None
    n, m = math.prod(shape), len(shape)
    if n > DENSE_TOKENS:
        return None
    mask = dense_mask(spec, shape)
    if n * n > DENSE_BOUND * int(mask.sum()) or not bool(mask.any(1).all()):
        return None
    strides = [math.prod(2 * k - 1 for k in spec.kernel_size[a + 1:]) for a in range(m)]
    rel = sum(i * st for i, st in zip(dense_rpb_index(spec, shape), strides))
    rel = torch.where(mask, rel, math.prod(2 * k - 1 for k in spec.kernel_size))  # the -inf entry of _bias' table
    view = tuple(x for length in shape for x in (1, length, 1))
    return Layout(view, *_perms(m), 1, n, rel.to(device), None, mask.to(device), _bands(mask, rel, shape, device))


def _bands(mask: torch.Tensor, rel: torch.Tensor, shape: tuple[int, ...], device: str) -> tuple[Band, ...] | None:
    """Bands of whole rows (first axis, at most :data:`BAND_QUERIES` queries each), each with the token range of
    its keys, or None where the bands would not skip at least a quarter of the dense pairs."""
    n, row = mask.shape[0], mask.shape[0] // shape[0]
    rows = max(1, BAND_QUERIES // row)
    if rows >= shape[0]:
        return None
    bands = []
    for q0 in range(0, n, rows * row):
        q1 = min(n, q0 + rows * row)
        keys = mask[q0:q1].any(0).nonzero()[:, 0]
        k0, k1 = int(keys[0]), int(keys[-1]) + 1
        bands.append(Band(q0, q1, k0, k1, rel[q0:q1, k0:k1].reshape(-1).to(device)))
    if sum((b.q1 - b.q0) * (b.k1 - b.k0) for b in bands) > 0.75 * n * n:
        return None
    return tuple(bands)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _to_blocks(x: torch.Tensor, lay: Layout, dtype: torch.dtype) -> torch.Tensor:
    """``[B, *S, H, D]`` -> ``[B * W, H, n, D]`` in ``dtype``, laid out as ``[B * W, n, H, D]`` (the flash kernel's
    own layout: a window covering an undilated map needs no copy)."""
    b, h, d = x.shape[0], x.shape[-2], x.shape[-1]
    if x.dtype != dtype:
        x = x.to(dtype)
    if lay.n_blocks == 1:
        return x.reshape(b, lay.n, h, d).transpose(1, 2)
    x = x.reshape(b, *lay.view, h, d).permute(lay.perm)
    return x.reshape(b * lay.n_blocks, lay.n, h, d).transpose(1, 2)


def _from_blocks(x: torch.Tensor, lay: Layout, bsh: torch.Size) -> torch.Tensor:
    """``[B * W, H, n, t]`` -> ``[*bsh, t]`` with ``bsh = (B, *S, H)``."""
    x = x.transpose(1, 2)
    if lay.n_blocks == 1:
        return x.reshape(*bsh, x.shape[-1])
    blocked = [lay.view[i] for i in range(len(lay.view)) if i % 3 != 1]  # (blocks, dilation) per axis
    x = x.reshape(bsh[0], *blocked, *lay.view[1::3], bsh[-1], x.shape[-1]).permute(lay.inv_perm)
    return x.reshape(*bsh, x.shape[-1])


def rpb_table(rpb: torch.Tensor, heads: int, dtype, masked: bool = True) -> torch.Tensor:
    """``[heads, size (+ 1)]``: the flattened rpb in ``dtype``; ``masked``: with a trailing -inf entry, which masked
    pairs index (one gather, no masking pass)."""
    table = rpb.to(dtype).reshape(heads, -1)
    return torch.nn.functional.pad(table, (0, 1), value=float('-inf')) if masked else table


def _pair_bias(table: torch.Tensor | None, rel: torch.Tensor, pair: torch.Tensor | None, size: tuple[int, int],
               dtype, device) -> torch.Tensor:
    """``[1, H or 1, *size]`` bias of query x key pairs: the rpb ``table`` (:func:`rpb_table`) gathered through
    ``rel``, or without rpb 0 where ``pair`` (None: every pair) allows and -inf elsewhere."""
    if table is None:
        bias = torch.zeros(1, 1, *size, dtype=dtype, device=device)
        return bias if pair is None else bias.masked_fill_(~pair, float('-inf'))
    return table.index_select(1, rel.reshape(-1)).view(1, table.shape[0], *size)


def _bias(lay: Layout, rpb: torch.Tensor | None, heads: int, n_extra: int, batch: int, dtype) -> torch.Tensor | None:
    """Additive bias ``[1 or B * W, H, n, n + E]`` (rpb, -inf on invalid keys, 0 on extra keys), or None."""
    if rpb is None and lay.valid is None and lay.pair is None:
        return None
    table = None if rpb is None else rpb_table(rpb, heads, dtype, masked=lay.pair is not None)
    bias = _pair_bias(table, lay.rel, lay.pair, (lay.n, lay.n), dtype, lay.rel.device)
    if lay.valid is not None:
        mask = torch.zeros(lay.n_blocks, 1, 1, lay.n, dtype=dtype, device=bias.device)
        mask.masked_fill_(~lay.valid[:, None, None, :], float('-inf'))
        bias = (bias + mask).expand(batch, lay.n_blocks, bias.shape[1], lay.n, lay.n)
        bias = bias.reshape(batch * lay.n_blocks, -1, lay.n, lay.n)
    if n_extra:
        bias = torch.nn.functional.pad(bias, (0, n_extra))
    if bias.shape[1] != heads:
        bias = bias.expand(bias.shape[0], heads, -1, -1)
    return bias.contiguous()


def _extra(x: torch.Tensor | None, lay: Layout, batch: int, dtype) -> torch.Tensor | None:
    """Extra tokens ``[B or 1, E, H, D]`` -> ``[B * W, H, E, D]`` (the same for every block of an image)."""
    if x is None:
        return None
    x = x.transpose(1, 2).to(dtype)
    return x.expand(batch, *x.shape[1:]).repeat_interleave(lay.n_blocks, 0)


def _inputs(q, k, v, lay, rpb, add_k, add_v):
    dtype = _compute_dtype(q)
    b, h = q.shape[0], q.shape[-2]
    qb, kb, vb = (_to_blocks(x, lay, dtype) for x in (q, k, v))
    if add_k is not None:
        kb = torch.cat([kb, _extra(add_k, lay, b, dtype)], 2)
        vb = torch.cat([vb, _extra(add_v, lay, b, dtype)], 2)
    bias = _bias(lay, rpb, h, 0 if add_k is None else add_k.shape[1], b, dtype)
    return qb, kb, vb, bias


def forward(q, k, v, lay: Layout, scale: float, rpb=None, add_k=None, add_v=None):
    """``(out [B, *S, H, D] in q.dtype, lse [B, *S, H])`` of a blocked pattern (see module doc)."""
    if lay.bands is not None and add_k is None:
        return _forward_bands(q, k, v, lay, scale, rpb)
    qb, kb, vb, bias = _inputs(q, k, v, lay, rpb, add_k, add_v)
    out, lse = _FLASH(qb, kb, vb, attn_mask=bias, scale=scale)
    if lay.n_blocks == 1:  # the flash output is [B, n, H, D] in memory already
        out, lse = out.transpose(1, 2).reshape(q.shape[:-1] + out.shape[-1:]), lse.transpose(1, 2).reshape(q.shape[:-1])
    else:
        out, lse = _from_blocks(out, lay, q.shape[:-1]), _from_blocks(lse[..., None], lay, q.shape[:-1])[..., 0]
    return (out if out.dtype == q.dtype else out.to(q.dtype)), lse


def _forward_bands(q, k, v, lay: Layout, scale: float, rpb):
    """A dense layout's forward as one flash call per band of rows (:func:`_bands`): its queries and its keys'
    token range are slices of the map, and the pairs outside the band's range are skipped (DiNAT-T's 14x14 stage:
    ~0.6x the dense pairs). The output and lse are those of the whole-map call, so the backward ignores the bands."""
    b, h, d = q.shape[0], q.shape[-2], q.shape[-1]
    dtype = _compute_dtype(q)
    qf, kf, vf = (x.reshape(b, lay.n, h, d) if x.dtype == dtype else x.reshape(b, lay.n, h, d).to(dtype)
                  for x in (q, k, v))
    table = None if rpb is None else rpb_table(rpb, h, dtype)
    out = torch.empty(b, lay.n, h, d, dtype=dtype, device=q.device)
    lse = torch.empty(b, h, lay.n, dtype=dtype, device=q.device)
    for band in lay.bands:
        bias = _band_bias(table, lay, band, dtype)
        o, lse[:, :, band.q0:band.q1] = _FLASH(qf[:, band.q0:band.q1].transpose(1, 2),
                                               kf[:, band.k0:band.k1].transpose(1, 2),
                                               vf[:, band.k0:band.k1].transpose(1, 2), attn_mask=bias, scale=scale)
        out[:, band.q0:band.q1] = o.transpose(1, 2)
    out = out.view(q.shape[:-1] + (d,))
    return (out if out.dtype == q.dtype else out.to(q.dtype)), lse.transpose(1, 2).reshape(q.shape[:-1])


def _split_extra(g: torch.Tensor, lay: Layout, add: torch.Tensor | None, like: torch.Tensor):
    """Split a key-side gradient ``[B * W, H, n + E, D]`` into the grid part and the extra tokens' part."""
    if add is None:
        return _from_blocks(g, lay, like.shape[:-1]).to(like.dtype), None
    grid, extra = g[:, :, :lay.n], g[:, :, lay.n:]
    extra = extra.reshape(like.shape[0], lay.n_blocks, *extra.shape[1:]).sum(1)  # [B, H, E, D]
    if add.shape[0] != like.shape[0]:
        extra = extra.sum(0, keepdim=True)
    return _from_blocks(grid, lay, like.shape[:-1]).to(like.dtype), extra.transpose(1, 2).to(add.dtype)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``exp(logits)`` in place, exactly 0 below :data:`P_MIN` (masked pairs: ``-inf``). The exponent is clamped
    above the float32 denormal range first (torch.exp is ~9x slower on -inf and ~100x slower where its result is
    denormal), and the tiny probabilities are dropped rather than kept: a gradient matmul whose operand or partial
    product is denormal runs ~70x slower (measured: a [160, 16, 100] x [160, 16, 32] batch, 0.19 ms normal, 13.5 ms
    with half its entries ~1e-38; flush-to-zero is per thread, so it does not reach OpenMP workers). Peaked softmax
    rows (trained models) produce such entries; random inputs do not. Masked pairs come out as exactly 0 too."""
    return torch.nn.functional.threshold_(logits.clamp_(min=EXP_MIN).exp_(), P_MIN, 0.)


def _block_perm(lay: Layout) -> tuple[int, ...]:
    """Permutation of ``[B, *view, H, D]`` to ``[B, (blocks, dilation) per axis, H, k per axis, D]``: the order of
    a contiguous ``[B * W, H, n, D]`` block tensor."""
    m = len(lay.view) // 3
    return (*lay.perm[:1 + 2 * m], lay.perm[-2], *lay.perm[1 + 2 * m:-2], lay.perm[-1])


def _blocks_copy(x: torch.Tensor, lay: Layout, dtype, scale: float | None = None) -> torch.Tensor:
    """``[B, *S, H, D]`` -> a contiguous ``[B * W, H, n, D]`` copy in ``dtype`` (times ``scale``), in one pass."""
    b, h, d = x.shape[0], x.shape[-2], x.shape[-1]
    out = torch.empty(b * lay.n_blocks, h, lay.n, d, dtype=dtype, device=x.device)
    src = x.reshape(b, *lay.view, h, d).permute(_block_perm(lay))
    dst = out.view(src.shape)
    return (dst.copy_(src) if scale is None else torch.mul(src, scale, out=dst)).view(out.shape)


def _grid_copy(x: torch.Tensor, lay: Layout, like: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Contiguous ``[B * W, H, n, D]`` -> a new ``[B, *S, H, D]`` tensor like ``like`` (times ``scale``), in one
    pass (the inverse of :func:`_blocks_copy`)."""
    b, h, d = like.shape[0], like.shape[-2], x.shape[-1]
    out = torch.empty(*like.shape[:-1], d, dtype=like.dtype, device=like.device)
    dst = out.view(b, *lay.view, h, d).permute(_block_perm(lay))
    src = x.view(dst.shape)
    if scale is None:
        dst.copy_(src)
    else:
        torch.mul(src, scale, out=dst)
    return out


def backward(grad_out, q, k, v, out, lse, lay: Layout, scale: float, rpb=None, add_k=None, add_v=None,
             grad_lse=None, need_rpb: bool = True, need_extra: bool = True):
    """Gradients ``(dq, dk, dv, drpb, dadd_k, dadd_v)`` of a blocked pattern (``None`` for absent/unneeded)."""
    dtype = _compute_dtype(q)
    need_rpb = need_rpb and rpb is not None
    if not need_rpb and grad_lse is None:
        qb, kb, vb, bias = _inputs(q, k, v, lay, rpb, add_k, add_v)
        dob, ob = _to_blocks(grad_out, lay, dtype), _to_blocks(out, lay, dtype)
        lseb = _to_blocks(lse[..., None], lay, dtype)[..., 0]  # [B * W, H, n]
        dq, dk, dv = _FLASH_BWD(dob, qb, kb, vb, ob, lseb, 0.0, False, attn_mask=bias, scale=scale)
        dq = _from_blocks(dq, lay, q.shape[:-1]).to(q.dtype)
        dk, dak = _split_extra(dk, lay, add_k, k)
        dv, dav = _split_extra(dv, lay, add_v, v)
        return dq, dk, dv, None, *((dak, dav) if need_extra else (None, None))
    return _explicit_backward(grad_out, q, k, v, out, lse, lay, scale, rpb, add_k, add_v, grad_lse, need_rpb,
                              need_extra, dtype)


def _explicit_backward(grad_out, q, k, v, out, lse, lay, scale, rpb, add_k, add_v, grad_lse, need_rpb, need_extra,
                       dtype):
    """FlashAttention's backward math (``ds = p * (dO V^T - delta)``) on contiguous ``[B * W, H, n, D]`` copies
    (batched matmuls ~1.4x faster than on the flash layout), in chunks of blocks and query rows that keep the
    logits in cache; the few tensor ops of a map that fits one chunk run on whole tensors (no slicing: DiNAT-T's
    7x7 stage spends more in per-op overhead than in any one kernel)."""
    b, h = q.shape[0], q.shape[-2]
    n_extra = 0 if add_k is None else add_k.shape[1]
    qs = _blocks_copy(q, lay, dtype, scale)  # dk = ds^T (q * scale)
    kb, vb, dob = _blocks_copy(k, lay, dtype), _blocks_copy(v, lay, dtype), _blocks_copy(grad_out, lay, dtype)
    if n_extra:
        kb = torch.cat([kb, _extra(add_k, lay, b, dtype)], 2)
        vb = torch.cat([vb, _extra(add_v, lay, b, dtype)], 2)
    delta = (grad_out.to(dtype) * out.to(dtype)).sum(-1, keepdim=True)  # rowsum(dO * O), [B, *S, H, 1]
    if grad_lse is not None:
        delta = delta - grad_lse[..., None].to(dtype)
    delta = _to_blocks(delta, lay, dtype)  # [B * W, H, n, 1]
    lseb = _to_blocks(lse[..., None], lay, dtype)
    if lay.bands is not None and not n_extra:
        dq, dk, dv, drpb = _band_backward(qs, kb, vb, dob, lseb, delta, lay, rpb, need_rpb)
        drpb = None if drpb is None else drpb[:, :-1].reshape(rpb.shape).to(rpb.dtype)
        return (_grid_copy(dq, lay, q, scale), _grid_copy(dk, lay, k), _grid_copy(dv, lay, v), drpb, None, None)
    bias = _bias(lay, rpb, h, n_extra, b, dtype)
    bw, n, m = qs.shape[0], lay.n, kb.shape[2]
    rows = min(n, max(1, _CHUNK_ELEMENTS // (h * m)))  # query rows per chunk
    step = max(1, _CHUNK_ELEMENTS // (h * rows * m))  # blocks per chunk
    if rows == n and step >= bw:  # one chunk
        dq, dk, dv, dbias = _chunk(qs, kb, vb, dob, lseb, delta, bias, n, need_rpb)
    else:
        dq, dk, dv = torch.empty_like(qs), torch.empty_like(kb), torch.empty_like(vb)
        dbias = torch.zeros(h, n, n, dtype=dtype, device=q.device) if need_rpb else None
        for c0 in range(0, bw, step):
            c1 = min(bw, c0 + step)
            kc, vc = kb[c0:c1], vb[c0:c1]
            bc = None if bias is None else bias if bias.shape[0] == 1 else bias[c0:c1]
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                dqc, dkc, dvc, dbc = _chunk(qs[c0:c1, :, r0:r1], kc, vc, dob[c0:c1, :, r0:r1],
                                            lseb[c0:c1, :, r0:r1], delta[c0:c1, :, r0:r1],
                                            None if bc is None else bc[:, :, r0:r1], n, need_rpb)
                dq[c0:c1, :, r0:r1] = dqc
                if r0 == 0:
                    dk[c0:c1], dv[c0:c1] = dkc, dvc
                else:
                    dk[c0:c1] += dkc
                    dv[c0:c1] += dvc
                if dbias is not None:
                    dbias[:, r0:r1] += dbc
    drpb = None
    if need_rpb:
        drpb = torch.zeros(rpb.shape[0], rpb[0].numel() + 1, dtype=dtype, device=q.device)  # + the masked entry
        drpb.index_add_(1, lay.rel.reshape(-1), dbias.reshape(dbias.shape[0], -1))
        drpb = drpb[:, :-1].reshape(rpb.shape).to(rpb.dtype)
    dq = _grid_copy(dq, lay, q, scale)
    if n_extra:
        dk, dak = _split_extra(dk, lay, add_k, k)
        dv, dav = _split_extra(dv, lay, add_v, v)
    else:
        dk, dv, dak, dav = _grid_copy(dk, lay, k), _grid_copy(dv, lay, v), None, None
    if not need_extra:
        dak = dav = None
    return dq, dk, dv, drpb, dak, dav


def _band_backward(qs, kb, vb, dob, lse, delta, lay: Layout, rpb, need_rpb: bool):
    """The explicit backward of a dense layout band by band (:func:`_bands`: the pairs outside a band's key range
    are skipped, as in its forward): ``(dq / scale, dk, dv, the rpb table's gradient [H, size + 1] or None)``."""
    b, h, n, d = qs.shape
    dtype = qs.dtype
    dq, dk, dv = torch.empty_like(qs), torch.zeros_like(kb), torch.zeros_like(vb)
    table = None if rpb is None else rpb_table(rpb, h, dtype)
    drpb = torch.zeros_like(table) if table is not None and need_rpb else None
    for band in lay.bands:
        qr, kr = slice(band.q0, band.q1), slice(band.k0, band.k1)
        dq[:, :, qr], dkc, dvc, dbias = _chunk(qs[:, :, qr], kb[:, :, kr], vb[:, :, kr], dob[:, :, qr],
                                               lse[:, :, qr], delta[:, :, qr], _band_bias(table, lay, band, dtype),
                                               band.k1 - band.k0, drpb is not None)
        dk[:, :, kr] += dkc
        dv[:, :, kr] += dvc
        if drpb is not None:
            drpb.index_add_(1, band.rel, dbias.reshape(h, -1))
    return dq, dk, dv, drpb


def _band_bias(table: torch.Tensor | None, lay: Layout, band: Band, dtype) -> torch.Tensor:
    """``[1, H or 1, band queries, band keys]``: :func:`_pair_bias` of one band of a dense layout."""
    pair = lay.pair[band.q0:band.q1, band.k0:band.k1] if table is None else None  # read only without rpb
    return _pair_bias(table, band.rel, pair, (band.q1 - band.q0, band.k1 - band.k0), dtype, lay.rel.device)


def _chunk(qs, kb, vb, dob, lse, delta, bias, n: int, need_rpb: bool):
    """One backward chunk: ``(dq / scale, dk, dv, the rpb part of ds summed over blocks)``."""
    # p = exp(q k^T + bias - lse): a plain matmul and in-place adds (no materialised bias - lse to baddbmm_ onto)
    p = torch.matmul(qs, kb.transpose(-1, -2))
    if bias is not None:
        p.add_(bias)
    probabilities(p.sub_(lse))
    ds = torch.matmul(dob, vb.transpose(-1, -2)).sub_(delta).mul_(p)
    dbias = (ds if ds.shape[-1] == n else ds[..., :n]).sum(0) if need_rpb else None
    return (torch.matmul(ds, kb), torch.matmul(ds.transpose(-1, -2), qs), torch.matmul(p.transpose(-1, -2), dob),
            dbias)
