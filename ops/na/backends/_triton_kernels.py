"""Triton kernels of the fused neighborhood-attention backend (see ``triton_na`` for the design notes).

Every kernel sees a 3-D token grid ``[L0, L1, L2]`` (1-D and 2-D problems have leading unit axes) and works in
dilation-group coordinates: a program owns one dilation group ``(g0, g1, g2)`` and a tile of group coordinates
``qg``; the token index on an axis is ``qg * dilation + g``. Tiles are boxes of ``T0 x T1 x T2`` (queries) or
``KT0 x KT1 x KT2`` (keys) tokens flattened row-major into ``BLOCK_M`` / ``BLOCK_N`` rows (padded to a power of two).
Logits are kept in base 2 (``log2(e)`` folded into the scale and the bias) so the softmax uses ``exp2``.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _split3(i, E1: tl.constexpr, E2: tl.constexpr):
    """Row-major decode of a flat tile index into 3 coordinates (inner extents ``E1``, ``E2``)."""
    return i // (E1 * E2), (i // E2) % E1, i % E2


@triton.jit
def _win(qg, lg, KS: tl.constexpr, ST: tl.constexpr, CA: tl.constexpr):
    """Keys ``[start, end)`` (group coordinates) seen by query ``qg`` on one axis of group length ``lg``."""
    if CA:
        leader = tl.minimum((qg // ST) * ST + ST - 1, lg - 1)
        start = tl.maximum(leader - KS + 1, 0)
        end = qg + 1
    else:
        leader = tl.minimum((qg // ST) * ST + ST // 2, lg - 1)
        start = tl.minimum(tl.maximum(leader - KS // 2, 0), lg - KS)
        end = start + KS
    return start, end


@triton.jit
def _inv_win(lo, hi, lg, KS: tl.constexpr, ST: tl.constexpr, CA: tl.constexpr):
    """Queries ``[qlo, qhi]`` whose window can hold a key of ``[lo, hi]`` (window starts/ends are monotone)."""
    if CA:
        qlo = lo
        gmax = (hi + KS - ST) // ST
        qhi = tl.where(hi + KS - 1 >= lg - 1, lg - 1, tl.minimum(gmax * ST + ST - 1, lg - 1))
    else:
        z = tl.maximum(lo - KS + 1, 0)
        gmin = (z + KS // 2 - ST // 2 + ST - 1) // ST
        qlo = tl.where(z == 0, 0, gmin * ST)
        gmax = (hi + KS // 2 - ST // 2) // ST
        qhi = tl.where((hi >= lg - KS) | (hi + KS // 2 >= lg - 1), lg - 1, tl.minimum(gmax * ST + ST - 1, lg - 1))
    return qlo, qhi


@triton.jit
def _program_tile(N0, N1, N2, L0, L1, L2, DL0, DL1, DL2, E0: tl.constexpr, E1: tl.constexpr, E2: tl.constexpr):
    """Head, batch, tile origin ``a`` (group coordinates), dilation group ``g`` and group lengths ``lg`` of this
    program, whose axis 0 enumerates the ``N0 x N1 x N2`` tiles of ``E0 x E1 x E2`` tokens of every group."""
    pid = tl.program_id(0)
    t2 = pid % N2
    t1 = (pid // N2) % N1
    t0 = (pid // (N2 * N1)) % N0
    grp = pid // (N2 * N1 * N0)
    g2 = grp % DL2
    g1 = (grp // DL2) % DL1
    g0 = grp // (DL2 * DL1)
    lg0 = (L0 - g0 + DL0 - 1) // DL0
    lg1 = (L1 - g1 + DL1 - 1) // DL1
    lg2 = (L2 - g2 + DL2 - 1) // DL2
    return (tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64), t0 * E0, t1 * E1, t2 * E2,
            g0, g1, g2, lg0, lg1, lg2)


@triton.jit
def _rows(a0, a1, a2, g0, g1, g2, lg0, lg1, lg2, DL0, DL1, DL2,
          T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr, BLOCK_M: tl.constexpr):
    """Rows of the query tile at ``a``: tile-local ``i``, group ``qg`` and token ``qx`` coordinates, and validity."""
    offs_m = tl.arange(0, BLOCK_M)
    i0, i1, i2 = _split3(offs_m, T1, T2)
    qg0, qg1, qg2 = a0 + i0, a1 + i1, a2 + i2
    row_ok = (offs_m < T0 * T1 * T2) & (qg0 < lg0) & (qg1 < lg1) & (qg2 < lg2)
    return i0, i1, i2, qg0, qg1, qg2, qg0 * DL0 + g0, qg1 * DL1 + g1, qg2 * DL2 + g2, row_ok


@triton.jit
def _key_cols(KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tile-local coordinates ``j`` of the key columns and whether a column is inside the tile."""
    offs_n = tl.arange(0, BLOCK_N)
    j0, j1, j2 = _split3(offs_n, KT1, KT2)
    return j0, j1, j2, offs_n < KT0 * KT1 * KT2


@triton.jit
def _cols(c0, c1, c2, j0, j1, j2, col_in, g0, g1, g2, DL0, DL1, DL2, VL0, VL1, VL2):
    """Columns of the key tile at ``c``: group ``kv`` and token ``kx`` coordinates, and whether the key is real
    (inside the tile and ``valid_shape``)."""
    kv0, kv1, kv2 = c0 + j0, c1 + j1, c2 + j2
    kx0, kx1, kx2 = kv0 * DL0 + g0, kv1 * DL1 + g1, kv2 * DL2 + g2
    return kv0, kv1, kv2, kx0, kx1, kx2, col_in & (kx0 < VL0) & (kx1 < VL1) & (kx2 < VL2)


@triton.jit
def _load_rows(base, x0, x1, x2, s0, s1, s2, offs_d, mask):
    """``[rows, BLOCK_D]`` tile at token coordinates ``x`` of a ``[.., L0, L1, L2, .., D]`` tensor (0 where masked)."""
    return tl.load(base + (x0 * s0 + x1 * s1 + x2 * s2)[:, None] + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def _store_rows(base, x0, x1, x2, s0, s1, s2, offs_d, value, mask):
    """Store a ``[rows, BLOCK_D]`` tile (cast to the tensor's dtype) at token coordinates ``x``."""
    tl.store(base + (x0 * s0 + x1 * s1 + x2 * s2)[:, None] + offs_d[None, :], value.to(base.dtype.element_ty),
             mask=mask)


@triton.jit
def _row_stats(LSE, DELTA, off, row_ok):
    """Base-2 logsumexp and ``delta`` of the rows at ``off``; rows that saw no key get ``+inf`` so that ``P = 0``."""
    lse = tl.load(LSE + off, mask=row_ok, other=float('inf'))
    return tl.where(lse == float('-inf'), float('inf'), lse * LOG2E), tl.load(DELTA + off, mask=row_ok, other=0.0)


@triton.jit
def _tile_windows(qa0, qa1, qa2, lg0, lg1, lg2, KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
                  ST0: tl.constexpr, ST1: tl.constexpr, ST2: tl.constexpr,
                  CA0: tl.constexpr, CA1: tl.constexpr, CA2: tl.constexpr,
                  T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr):
    """Windows ``[sta, ena)`` of the first and ``[stb, enb)`` of the last query of the tile at ``qa``.

    Windows are monotone in the query: ``[sta, enb)`` is the tile's key halo, and keys in ``[stb, ena)`` are seen
    by every query of the tile.
    """
    qb0 = tl.minimum(qa0 + T0 - 1, lg0 - 1)
    qb1 = tl.minimum(qa1 + T1 - 1, lg1 - 1)
    qb2 = tl.minimum(qa2 + T2 - 1, lg2 - 1)
    sta0, ena0 = _win(qa0, lg0, KS0, ST0, CA0)
    sta1, ena1 = _win(qa1, lg1, KS1, ST1, CA1)
    sta2, ena2 = _win(qa2, lg2, KS2, ST2, CA2)
    stb0, enb0 = _win(qb0, lg0, KS0, ST0, CA0)
    stb1, enb1 = _win(qb1, lg1, KS1, ST1, CA1)
    stb2, enb2 = _win(qb2, lg2, KS2, ST2, CA2)
    return sta0, sta1, sta2, ena0, ena1, ena2, stb0, stb1, stb2, enb0, enb1, enb2


@triton.jit
def _query_halo(qg0, qg1, qg2, qa0, qa1, qa2, lg0, lg1, lg2,
                KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
                ST0: tl.constexpr, ST1: tl.constexpr, ST2: tl.constexpr,
                CA0: tl.constexpr, CA1: tl.constexpr, CA2: tl.constexpr,
                T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,
                KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr):
    """Key side of a query-tile program: per-query window starts ``st``, the halo box of ``n_tiles`` key tiles
    (origin ``lo``, ``n1 x n2`` inner tiles; none for a tile past the group) and the ``stb``/``ena`` bounds."""
    st0, _ = _win(qg0, lg0, KS0, ST0, CA0)
    st1, _ = _win(qg1, lg1, KS1, ST1, CA1)
    st2, _ = _win(qg2, lg2, KS2, ST2, CA2)
    lo0, lo1, lo2, ena0, ena1, ena2, stb0, stb1, stb2, hi0, hi1, hi2 = _tile_windows(
        qa0, qa1, qa2, lg0, lg1, lg2, KS0, KS1, KS2, ST0, ST1, ST2, CA0, CA1, CA2, T0, T1, T2)
    live = (qa0 < lg0) & (qa1 < lg1) & (qa2 < lg2)
    n1 = tl.cdiv(hi1 - lo1, KT1)
    n2 = tl.cdiv(hi2 - lo2, KT2)
    n_tiles = tl.where(live, tl.cdiv(hi0 - lo0, KT0) * n1 * n2, 0)
    return st0, st1, st2, lo0, lo1, lo2, n1, n2, n_tiles, stb0, stb1, stb2, ena0, ena1, ena2


@triton.jit
def _axis_partial(c, KT: tl.constexpr, start_last, end_first, g, dl, vl):
    """True when the key tile ``[c, c + KT)`` is not entirely visible to every query of the tile on this axis."""
    return (c < start_last) | (c + KT > end_first) | ((c + KT - 1) * dl + g >= vl)


@triton.jit
def _partial_tile(c0, c1, c2, stb0, stb1, stb2, ena0, ena1, ena2, g0, g1, g2, DL0, DL1, DL2, VL0, VL1, VL2,
                  KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr):
    """True when the key tile at ``c`` needs the element mask (``_axis_partial`` on some axis)."""
    return (_axis_partial(c0, KT0, stb0, ena0, g0, DL0, VL0) | _axis_partial(c1, KT1, stb1, ena1, g1, DL1, VL1)
            | _axis_partial(c2, KT2, stb2, ena2, g2, DL2, VL2))


@triton.jit
def _tile_origin(it, lo0, lo1, lo2, n1, n2, KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr):
    """Origin of the ``it``-th tile of a halo box starting at ``(lo0, lo1, lo2)`` with ``n1 x n2`` inner tiles.

    This is the routing hook: a routed pattern (BiFormer) replaces this call by a load of the ``it``-th entry
    of the query tile's index list; the loop bodies do not change.
    """
    return lo0 + (it // (n1 * n2)) * KT0, lo1 + ((it // n2) % n1) * KT1, lo2 + (it % n2) * KT2


@triton.jit
def _rpb_bias(rpb_h, qg0, qg1, qg2, kv0, kv1, kv2, sr0, sr1, sr2,
              KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr):
    """Gather ``rpb[h, kv - qg + k - 1]`` (per axis, clamped into the table) for broadcast query/key coords."""
    off = tl.minimum(tl.maximum(kv2 - qg2 + KS2 - 1, 0), 2 * KS2 - 2) * sr2
    if KS1 > 1:
        off += tl.minimum(tl.maximum(kv1 - qg1 + KS1 - 1, 0), 2 * KS1 - 2) * sr1
    if KS0 > 1:
        off += tl.minimum(tl.maximum(kv0 - qg0 + KS0 - 1, 0), 2 * KS0 - 2) * sr0
    return tl.load(rpb_h + off).to(tl.float32) * LOG2E


@triton.jit
def _axis_visible(qg, st, kv, KS: tl.constexpr, CA: tl.constexpr):
    if CA:
        return (kv >= st) & (kv <= qg)
    else:
        return (kv >= st) & (kv < st + KS)


@triton.jit
def _visible(qg0, qg1, qg2, st0, st1, st2, kv0, kv1, kv2, key_ok,
             CA0: tl.constexpr, CA1: tl.constexpr, CA2: tl.constexpr,
             KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
             ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr):
    """Element mask: key ``kv`` lies in the window of query ``qg`` on every axis (broadcast shapes).

    ``ACTa`` is False for an axis where query and key tiles are one token wide and the kernel is 1 (the padded
    axes of 1-D/2-D problems): there the key is the query's own coordinate and only ``key_ok`` matters.
    """
    vis = key_ok
    if ACT0:
        vis = vis & _axis_visible(qg0, st0, kv0, KS0, CA0)
    if ACT1:
        vis = vis & _axis_visible(qg1, st1, kv1, KS1, CA1)
    if ACT2:
        vis = vis & _axis_visible(qg2, st2, kv2, KS2, CA2)
    return vis


@triton.jit
def _tile_logits(q, k, qk_scale2, rpb_h, sr0, sr1, sr2, qg0, qg1, qg2, st0, st1, st2, kv0, kv1, kv2, key_ok, col_in,
                 partial, KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
                 CA0: tl.constexpr, CA1: tl.constexpr, CA2: tl.constexpr,
                 ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
                 KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr,
                 BLOCK_N: tl.constexpr, HAS_RPB: tl.constexpr, DOT_PREC: tl.constexpr):
    """Base-2 logits ``[BLOCK_M, BLOCK_N]`` of a query tile against a key tile, ``-inf`` where the key is not seen
    (only a ``partial`` tile needs the element mask)."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale2
    if HAS_RPB:
        s += _rpb_bias(rpb_h, qg0[:, None], qg1[:, None], qg2[:, None], kv0[None, :], kv1[None, :], kv2[None, :],
                       sr0, sr1, sr2, KS0, KS1, KS2)
    if KT0 * KT1 * KT2 < BLOCK_N:
        s = tl.where(col_in[None, :], s, float('-inf'))
    if partial:
        vis = _visible(qg0[:, None], qg1[:, None], qg2[:, None], st0[:, None], st1[:, None], st2[:, None],
                       kv0[None, :], kv1[None, :], kv2[None, :], key_ok[None, :], CA0, CA1, CA2, KS0, KS1, KS2,
                       ACT0, ACT1, ACT2)
        s = tl.where(vis, s, float('-inf'))
    return s


@triton.jit
def _softmax_step(m_i, l_i, s):
    """Online-softmax update by a tile of base-2 logits: ``(new max, rescale of the old sums, P, new sum)``; a row
    that has seen only ``-inf`` keeps max ``-inf`` and sum 0."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == float('-inf'), 0.0, m_new)
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(s - m_use[:, None])
    return m_new, alpha, p, l_i * alpha + tl.sum(p, 1)


@triton.jit
def _token(x0, x1, x2, L1, L2):
    """Flat token index of grid coordinates ``x`` (the key id of the dropout stream)."""
    return (x0 * L1 + x1) * L2 + x2


@triton.jit
def _query_row(qx0, qx1, qx2, b, h, L0, L1, L2):
    """Flat (batch, head, query token) id, int64: the query id of the dropout stream."""
    return (b * tl.num_programs(1) + h) * (L0 * L1 * L2) + _token(qx0, qx1, qx2, L1, L2)


@triton.jit
def _dropout_scale(seed, rng_offset, row, key, n_keys, p_drop):
    """Dropout mask scaled by ``1 / (1 - p)`` of (query row, key) pairs (broadcast shapes), from Philox with counter
    ``rng_offset + row * n_keys + key`` (int64): unique per (batch, head, query, key), so the backward regenerates
    exactly the forward's mask in any tiling and orientation."""
    keep = tl.rand(seed, rng_offset + row * n_keys + key) >= p_drop
    return tl.where(keep, 1.0 / (1.0 - p_drop), 0.0)


@triton.jit
def _ds(s, lse2, delta, do, v, z, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr):
    """``dS = P * (Z * dO V^T - delta)`` of a ``[queries, keys]`` logit tile (``Z``: scaled dropout mask)."""
    p = tl.exp2(s - lse2[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    if DROPOUT:
        dp = dp * z
    return p * (dp - delta[:, None])


@triton.jit
def _dkv_step(st, lse2, delta, q, do, v, dk, dv, zt, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr):
    """Accumulate ``dK += dS^T Q`` and ``dV += (P Z)^T dO`` from a transposed ``[keys, queries]`` logit tile."""
    pt = tl.exp2(st - lse2[None, :])
    dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
    if DROPOUT:
        dv += tl.dot((pt * zt).to(do.dtype), do, input_precision=DOT_PREC)
        dpt = dpt * zt
    else:
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PREC)
    dst = pt * (dpt - delta[None, :])
    dk += tl.dot(dst.to(q.dtype), q, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _na_fwd_kernel(
        Q, K, V, OUT, LSE, RPB, AK, AV,
        sqb, sq0, sq1, sq2, sqh, skb, sk0, sk1, sk2, skh, svb, sv0, sv1, sv2, svh,
        sob, so0, so1, so2, soh, slb, sl0, sl1, sl2, slh, srh, sr0, sr1, sr2,
        sakb, sakn, sakh, savb, savn, savh,
        L0, L1, L2, DL0, DL1, DL2, VL0, VL1, VL2, NT0, NT1, NT2, n_extra, head_dim, qk_scale2,
        seed, rng_offset, n_keys, p_drop,
        KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
        ST0: tl.constexpr, ST1: tl.constexpr, ST2: tl.constexpr,
        CA0: tl.constexpr, CA1: tl.constexpr, CA2: tl.constexpr,
        T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,
        KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr,
        ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        HAS_RPB: tl.constexpr, HAS_EXTRA: tl.constexpr, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    h, b, qa0, qa1, qa2, g0, g1, g2, lg0, lg1, lg2 = _program_tile(NT0, NT1, NT2, L0, L1, L2, DL0, DL1, DL2,
                                                                     T0, T1, T2)
    _, _, _, qg0, qg1, qg2, qx0, qx1, qx2, row_ok = _rows(qa0, qa1, qa2, g0, g1, g2, lg0, lg1, lg2, DL0, DL1, DL2,
                                                          T0, T1, T2, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    md_ok = row_ok[:, None] & d_ok[None, :]
    q = _load_rows(Q + b * sqb + h * sqh, qx0, qx1, qx2, sq0, sq1, sq2, offs_d, md_ok)
    qrow = _query_row(qx0, qx1, qx2, b, h, L0, L1, L2)[:, None]

    st0, st1, st2, lo0, lo1, lo2, n1, n2, n_tiles, stb0, stb1, stb2, ena0, ena1, ena2 = _query_halo(
        qg0, qg1, qg2, qa0, qa1, qa2, lg0, lg1, lg2, KS0, KS1, KS2, ST0, ST1, ST2, CA0, CA1, CA2, T0, T1, T2,
        KT0, KT1, KT2)
    j0, j1, j2, col_in = _key_cols(KT0, KT1, KT2, BLOCK_N)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for it in range(n_tiles):
        c0, c1, c2 = _tile_origin(it, lo0, lo1, lo2, n1, n2, KT0, KT1, KT2)
        kv0, kv1, kv2, kx0, kx1, kx2, key_ok = _cols(c0, c1, c2, j0, j1, j2, col_in, g0, g1, g2, DL0, DL1, DL2,
                                                     VL0, VL1, VL2)
        kd_ok = key_ok[:, None] & d_ok[None, :]
        k = _load_rows(k_base, kx0, kx1, kx2, sk0, sk1, sk2, offs_d, kd_ok)
        partial = _partial_tile(c0, c1, c2, stb0, stb1, stb2, ena0, ena1, ena2, g0, g1, g2, DL0, DL1, DL2,
                                VL0, VL1, VL2, KT0, KT1, KT2)
        s = _tile_logits(q, k, qk_scale2, RPB + h * srh, sr0, sr1, sr2, qg0, qg1, qg2, st0, st1, st2, kv0, kv1, kv2,
                         key_ok, col_in, partial, KS0, KS1, KS2, CA0, CA1, CA2, ACT0, ACT1, ACT2, KT0, KT1, KT2,
                         BLOCK_N, HAS_RPB, DOT_PREC)
        m_i, alpha, p, l_i = _softmax_step(m_i, l_i, s)  # the normaliser sums the undropped weights
        if DROPOUT:
            p = p * _dropout_scale(seed, rng_offset, qrow, _token(kx0, kx1, kx2, L1, L2)[None, :], n_keys, p_drop)
        v = _load_rows(v_base, kx0, kx1, kx2, sv0, sv1, sv2, offs_d, kd_ok)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
    if HAS_EXTRA:
        for e0 in range(0, n_extra, BLOCK_N):
            offs_e = e0 + tl.arange(0, BLOCK_N)
            e_ok = offs_e < n_extra
            ed_ok = e_ok[:, None] & d_ok[None, :]
            ak = tl.load(AK + b * sakb + h * sakh + offs_e[:, None] * sakn + offs_d[None, :], mask=ed_ok, other=0.0)
            s = tl.dot(q, tl.trans(ak), input_precision=DOT_PREC) * qk_scale2
            m_i, alpha, p, l_i = _softmax_step(m_i, l_i, tl.where(e_ok[None, :], s, float('-inf')))
            if DROPOUT:
                p = p * _dropout_scale(seed, rng_offset, qrow, (L0 * L1 * L2 + offs_e)[None, :], n_keys, p_drop)
            av = tl.load(AV + b * savb + h * savh + offs_e[:, None] * savn + offs_d[None, :], mask=ed_ok, other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(av.dtype), av, input_precision=DOT_PREC)
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    _store_rows(OUT + b * sob + h * soh, qx0, qx1, qx2, so0, so1, so2, offs_d, out, md_ok)
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) * LN2, float('-inf'))
    tl.store(LSE + b * slb + h * slh + qx0 * sl0 + qx1 * sl1 + qx2 * sl2, lse, mask=row_ok)


@triton.jit
def _na_delta_kernel(OUT, DO, GLSE, DELTA, n_rows, head_dim,
                     BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, HAS_GLSE: tl.constexpr):
    """``delta[r] = sum_d dO[r, d] * O[r, d] - dlse[r]`` in fp32 over contiguous ``[n_rows, head_dim]`` rows."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    offs_d = tl.arange(0, BLOCK_D)
    mask = row_ok[:, None] & (offs_d < head_dim)[None, :]
    idx = rows[:, None] * head_dim + offs_d[None, :]
    o = tl.load(OUT + idx, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + idx, mask=mask, other=0.0).to(tl.float32)
    delta = tl.sum(o * do, 1)
    if HAS_GLSE:
        delta -= tl.load(GLSE + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(DELTA + rows, delta, mask=row_ok)


@triton.jit
def _na_bwd_dq_kernel(
        Q, K, V, DO, LSE, DELTA, DQ, RPB, DRPB, AK, AV,
        sqb, sq0, sq1, sq2, sqh, skb, sk0, sk1, sk2, skh, svb, sv0, sv1, sv2, svh,
        sdb, sd0, sd1, sd2, sdh, sgb, sg0, sg1, sg2, sgh, slb, sl0, sl1, sl2, slh, srh, sr0, sr1, sr2,
        sakb, sakn, sakh, savb, savn, savh,
        L0, L1, L2, DL0, DL1, DL2, VL0, VL1, VL2, NT0, NT1, NT2, n_extra, head_dim, qk_scale2, scale, n_heads,
        seed, rng_offset, n_keys, p_drop,
        KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
        ST0: tl.constexpr, ST1: tl.constexpr, ST2: tl.constexpr,
        CA0: tl.constexpr, CA1: tl.constexpr, CA2: tl.constexpr,
        T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,
        KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr,
        ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        PR0: tl.constexpr, PR1: tl.constexpr, PR2: tl.constexpr,
        PG0: tl.constexpr, PG1: tl.constexpr, PG2: tl.constexpr,
        HAS_RPB: tl.constexpr, DRPB_ON: tl.constexpr, RPB_ATOMIC: tl.constexpr, HAS_EXTRA: tl.constexpr,
        DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """dQ (and, when ``DRPB_ON``, dRPB) of one query tile: the forward's tile loop with ``dS = P * (dP - delta)``.

    dRPB: ``dS`` of each (query tile, key tile) pair is first summed over pairs with the same tile-local relative
    offset (a per-row gather that skews ``dS`` into ``[BLOCK_M, PR0*PR1*PR2]``, then a column sum), then shifted
    into the program's register table over the global offsets ``[2k0-1, 2k1-1, 2k2-1]`` (padded to ``PG``).
    At the end the table is either atomically added to ``DRPB[h]`` or stored as this program's partial row
    (deterministic mode; the host sums the partials in a fixed order).
    """
    h, b, qa0, qa1, qa2, g0, g1, g2, lg0, lg1, lg2 = _program_tile(NT0, NT1, NT2, L0, L1, L2, DL0, DL1, DL2,
                                                                     T0, T1, T2)
    i0, i1, i2, qg0, qg1, qg2, qx0, qx1, qx2, row_ok = _rows(qa0, qa1, qa2, g0, g1, g2, lg0, lg1, lg2, DL0, DL1, DL2,
                                                             T0, T1, T2, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    md_ok = row_ok[:, None] & d_ok[None, :]
    q = _load_rows(Q + b * sqb + h * sqh, qx0, qx1, qx2, sq0, sq1, sq2, offs_d, md_ok)
    do = _load_rows(DO + b * sdb + h * sdh, qx0, qx1, qx2, sd0, sd1, sd2, offs_d, md_ok)
    lse2, delta = _row_stats(LSE, DELTA, b * slb + h * slh + qx0 * sl0 + qx1 * sl1 + qx2 * sl2, row_ok)
    qrow = _query_row(qx0, qx1, qx2, b, h, L0, L1, L2)[:, None]

    st0, st1, st2, lo0, lo1, lo2, n1, n2, n_tiles, stb0, stb1, stb2, ena0, ena1, ena2 = _query_halo(
        qg0, qg1, qg2, qa0, qa1, qa2, lg0, lg1, lg2, KS0, KS1, KS2, ST0, ST1, ST2, CA0, CA1, CA2, T0, T1, T2,
        KT0, KT1, KT2)
    j0, j1, j2, col_in = _key_cols(KT0, KT1, KT2, BLOCK_N)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if DRPB_ON:
        # skew indices: local offset r of row i comes from key column j = r + i - (T - 1) (per axis)
        offs_r = tl.arange(0, PR0 * PR1 * PR2)
        r0, r1, r2 = _split3(offs_r, PR1, PR2)
        jj0 = r0[None, :] + i0[:, None] - (T0 - 1)
        jj1 = r1[None, :] + i1[:, None] - (T1 - 1)
        jj2 = r2[None, :] + i2[:, None] - (T2 - 1)
        jok = ((jj0 >= 0) & (jj0 < KT0) & (jj1 >= 0) & (jj1 < KT1) & (jj2 >= 0) & (jj2 < KT2))
        jidx = tl.where(jok, (jj0 * KT1 + jj1) * KT2 + jj2, 0)
        offs_g = tl.arange(0, PG0 * PG1 * PG2)
        gg0, gg1, gg2 = _split3(offs_g, PG1, PG2)
        g_ok = (gg0 < 2 * KS0 - 1) & (gg1 < 2 * KS1 - 1) & (gg2 < 2 * KS2 - 1)
        drpb = tl.zeros([PG0 * PG1 * PG2], tl.float32)
    for it in range(n_tiles):
        c0, c1, c2 = _tile_origin(it, lo0, lo1, lo2, n1, n2, KT0, KT1, KT2)
        kv0, kv1, kv2, kx0, kx1, kx2, key_ok = _cols(c0, c1, c2, j0, j1, j2, col_in, g0, g1, g2, DL0, DL1, DL2,
                                                     VL0, VL1, VL2)
        kd_ok = key_ok[:, None] & d_ok[None, :]
        k = _load_rows(k_base, kx0, kx1, kx2, sk0, sk1, sk2, offs_d, kd_ok)
        v = _load_rows(v_base, kx0, kx1, kx2, sv0, sv1, sv2, offs_d, kd_ok)
        partial = _partial_tile(c0, c1, c2, stb0, stb1, stb2, ena0, ena1, ena2, g0, g1, g2, DL0, DL1, DL2,
                                VL0, VL1, VL2, KT0, KT1, KT2)
        s = _tile_logits(q, k, qk_scale2, RPB + h * srh, sr0, sr1, sr2, qg0, qg1, qg2, st0, st1, st2, kv0, kv1, kv2,
                         key_ok, col_in, partial, KS0, KS1, KS2, CA0, CA1, CA2, ACT0, ACT1, ACT2, KT0, KT1, KT2,
                         BLOCK_N, HAS_RPB, DOT_PREC)
        z = 1.0
        if DROPOUT:
            z = _dropout_scale(seed, rng_offset, qrow, _token(kx0, kx1, kx2, L1, L2)[None, :], n_keys, p_drop)
        ds = _ds(s, lse2, delta, do, v, z, DROPOUT, DOT_PREC)
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
        if DRPB_ON:
            local = tl.sum(tl.where(jok, tl.gather(ds, jidx, axis=1), 0.0), 0)
            rr0 = gg0 - (c0 - qa0 - (T0 - 1) + KS0 - 1)
            rr1 = gg1 - (c1 - qa1 - (T1 - 1) + KS1 - 1)
            rr2 = gg2 - (c2 - qa2 - (T2 - 1) + KS2 - 1)
            rok = (g_ok & (rr0 >= 0) & (rr0 < T0 + KT0 - 1) & (rr1 >= 0) & (rr1 < T1 + KT1 - 1)
                   & (rr2 >= 0) & (rr2 < T2 + KT2 - 1))
            ridx = tl.where(rok, (rr0 * PR1 + rr1) * PR2 + rr2, 0)
            drpb += tl.where(rok, tl.gather(local, ridx, axis=0), 0.0)
    if HAS_EXTRA:
        for e0 in range(0, n_extra, BLOCK_N):
            offs_e = e0 + tl.arange(0, BLOCK_N)
            e_ok = offs_e < n_extra
            ed_ok = e_ok[:, None] & d_ok[None, :]
            ak = tl.load(AK + b * sakb + h * sakh + offs_e[:, None] * sakn + offs_d[None, :], mask=ed_ok, other=0.0)
            av = tl.load(AV + b * savb + h * savh + offs_e[:, None] * savn + offs_d[None, :], mask=ed_ok, other=0.0)
            s = tl.dot(q, tl.trans(ak), input_precision=DOT_PREC) * qk_scale2
            z = 1.0
            if DROPOUT:
                z = _dropout_scale(seed, rng_offset, qrow, (L0 * L1 * L2 + offs_e)[None, :], n_keys, p_drop)
            ds = _ds(tl.where(e_ok[None, :], s, float('-inf')), lse2, delta, do, av, z, DROPOUT, DOT_PREC)
            dq += tl.dot(ds.to(ak.dtype), ak, input_precision=DOT_PREC)
    _store_rows(DQ + b * sgb + h * sgh, qx0, qx1, qx2, sg0, sg1, sg2, offs_d, dq * scale, md_ok)
    if DRPB_ON:
        if RPB_ATOMIC:
            tl.atomic_add(DRPB + h * (PG0 * PG1 * PG2) + offs_g, drpb, mask=g_ok, sem='relaxed')
        else:
            row = (b * n_heads + h) * tl.num_programs(0) + tl.program_id(0)
            tl.store(DRPB + row * (PG0 * PG1 * PG2) + offs_g, drpb)


@triton.jit
def _na_bwd_dkv_kernel(
        Q, K, V, DO, LSE, DELTA, DK, DV, RPB,
        sqb, sq0, sq1, sq2, sqh, skb, sk0, sk1, sk2, skh, svb, sv0, sv1, sv2, svh,
        sdb, sd0, sd1, sd2, sdh, slb, sl0, sl1, sl2, slh, srh, sr0, sr1, sr2,
        sgkb, sgk0, sgk1, sgk2, sgkh, sgvb, sgv0, sgv1, sgv2, sgvh,
        L0, L1, L2, DL0, DL1, DL2, VL0, VL1, VL2, NK0, NK1, NK2, head_dim, qk_scale2, scale,
        seed, rng_offset, n_keys, p_drop,
        KS0: tl.constexpr, KS1: tl.constexpr, KS2: tl.constexpr,
        ST0: tl.constexpr, ST1: tl.constexpr, ST2: tl.constexpr,
        CA0: tl.constexpr, CA1: tl.constexpr, CA2: tl.constexpr,
        T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,
        KT0: tl.constexpr, KT1: tl.constexpr, KT2: tl.constexpr,
        ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        HAS_RPB: tl.constexpr, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """dK and dV of one key tile, iterating the query tiles of its inverse window (``_inv_win``); no atomics."""
    h, b, c0, c1, c2, g0, g1, g2, lg0, lg1, lg2 = _program_tile(NK0, NK1, NK2, L0, L1, L2, DL0, DL1, DL2,
                                                                  KT0, KT1, KT2)
    live = (c0 < lg0) & (c1 < lg1) & (c2 < lg2)
    qlo0, qhi0 = _inv_win(c0, tl.minimum(c0 + KT0 - 1, lg0 - 1), lg0, KS0, ST0, CA0)
    qlo1, qhi1 = _inv_win(c1, tl.minimum(c1 + KT1 - 1, lg1 - 1), lg1, KS1, ST1, CA1)
    qlo2, qhi2 = _inv_win(c2, tl.minimum(c2 + KT2 - 1, lg2 - 1), lg2, KS2, ST2, CA2)
    n1 = tl.cdiv(tl.maximum(qhi1 - qlo1 + 1, 0), T1)
    n2 = tl.cdiv(tl.maximum(qhi2 - qlo2 + 1, 0), T2)
    n_tiles = tl.where(live, tl.cdiv(tl.maximum(qhi0 - qlo0 + 1, 0), T0) * n1 * n2, 0)

    j0, j1, j2, col_in = _key_cols(KT0, KT1, KT2, BLOCK_N)
    kv0, kv1, kv2, kx0, kx1, kx2, key_ok = _cols(c0, c1, c2, j0, j1, j2, col_in, g0, g1, g2, DL0, DL1, DL2,
                                                 VL0, VL1, VL2)
    key_in = col_in & (kv0 < lg0) & (kv1 < lg1) & (kv2 < lg2)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    k = _load_rows(K + b * skb + h * skh, kx0, kx1, kx2, sk0, sk1, sk2, offs_d, key_ok[:, None] & d_ok[None, :])
    v = _load_rows(V + b * svb + h * svh, kx0, kx1, kx2, sv0, sv1, sv2, offs_d, key_ok[:, None] & d_ok[None, :])

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for it in range(n_tiles):
        qa0, qa1, qa2 = _tile_origin(it, qlo0, qlo1, qlo2, n1, n2, T0, T1, T2)
        _, _, _, qg0, qg1, qg2, qx0, qx1, qx2, row_ok = _rows(qa0, qa1, qa2, g0, g1, g2, lg0, lg1, lg2,
                                                              DL0, DL1, DL2, T0, T1, T2, BLOCK_M)
        md_ok = row_ok[:, None] & d_ok[None, :]
        q = _load_rows(Q + b * sqb + h * sqh, qx0, qx1, qx2, sq0, sq1, sq2, offs_d, md_ok)
        do = _load_rows(DO + b * sdb + h * sdh, qx0, qx1, qx2, sd0, sd1, sd2, offs_d, md_ok)
        lse2, delta = _row_stats(LSE, DELTA, b * slb + h * slh + qx0 * sl0 + qx1 * sl1 + qx2 * sl2, row_ok)
        st = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale2  # [keys, queries]
        if HAS_RPB:
            st += _rpb_bias(RPB + h * srh, qg0[None, :], qg1[None, :], qg2[None, :], kv0[:, None], kv1[:, None],
                            kv2[:, None], sr0, sr1, sr2, KS0, KS1, KS2)
        _, _, _, ena0, ena1, ena2, stb0, stb1, stb2, _, _, _ = _tile_windows(
            qa0, qa1, qa2, lg0, lg1, lg2, KS0, KS1, KS2, ST0, ST1, ST2, CA0, CA1, CA2, T0, T1, T2)
        if _partial_tile(c0, c1, c2, stb0, stb1, stb2, ena0, ena1, ena2, g0, g1, g2, DL0, DL1, DL2, VL0, VL1, VL2,
                         KT0, KT1, KT2):
            st0, en0 = _win(qg0, lg0, KS0, ST0, CA0)
            st1, en1 = _win(qg1, lg1, KS1, ST1, CA1)
            st2, en2 = _win(qg2, lg2, KS2, ST2, CA2)
            vis = _visible(qg0[None, :], qg1[None, :], qg2[None, :], st0[None, :], st1[None, :], st2[None, :],
                           kv0[:, None], kv1[:, None], kv2[:, None], key_ok[:, None], CA0, CA1, CA2, KS0, KS1, KS2,
                           ACT0, ACT1, ACT2)
            st = tl.where(vis, st, float('-inf'))
        zt = 1.0
        if DROPOUT:
            zt = _dropout_scale(seed, rng_offset, _query_row(qx0, qx1, qx2, b, h, L0, L1, L2)[None, :],
                                _token(kx0, kx1, kx2, L1, L2)[:, None], n_keys, p_drop)
        dk, dv = _dkv_step(st, lse2, delta, q, do, v, dk, dv, zt, DROPOUT, DOT_PREC)
    nd_ok = key_in[:, None] & d_ok[None, :]
    _store_rows(DK + b * sgkb + h * sgkh, kx0, kx1, kx2, sgk0, sgk1, sgk2, offs_d, dk * scale, nd_ok)
    _store_rows(DV + b * sgvb + h * sgvh, kx0, kx1, kx2, sgv0, sgv1, sgv2, offs_d, dv, nd_ok)


@triton.jit
def _na_bwd_extra_kernel(
        Q, DO, LSE, DELTA, AK, AV, DAK, DAV,
        sqb, sq0, sq1, sq2, sqh, sdb, sd0, sd1, sd2, sdh, slb, sl0, sl1, sl2, slh,
        sakb, sakn, sakh, savb, savn, savh,
        L1, L2, n_tokens, n_extra, n_eblocks, chunk, n_batch, n_heads, head_dim, qk_scale2, scale,
        seed, rng_offset, n_keys, p_drop,
        BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, DROPOUT: tl.constexpr,
        DOT_PREC: tl.constexpr,
):
    """Partial gradients of the extra keys/values over one chunk of queries (every query sees every extra token).

    Writes fp32 partials ``[n_chunks, batch, n_extra, heads, head_dim]``; the host sums them (deterministic).
    """
    pid = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    eb = pid % n_eblocks
    ch = pid // n_eblocks
    offs_e = eb * BLOCK_E + tl.arange(0, BLOCK_E)
    e_ok = offs_e < n_extra
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    ed_ok = e_ok[:, None] & d_ok[None, :]
    ak = tl.load(AK + b * sakb + h * sakh + offs_e[:, None] * sakn + offs_d[None, :], mask=ed_ok, other=0.0)
    av = tl.load(AV + b * savb + h * savh + offs_e[:, None] * savn + offs_d[None, :], mask=ed_ok, other=0.0)
    dk = tl.zeros([BLOCK_E, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_E, BLOCK_D], tl.float32)
    n_end = tl.minimum((ch + 1) * chunk, n_tokens)
    for n_start in range(ch * chunk, n_end, BLOCK_M):
        offs_n = n_start + tl.arange(0, BLOCK_M)
        row_ok = offs_n < n_end
        x0 = offs_n // (L1 * L2)
        x1 = (offs_n // L2) % L1
        x2 = offs_n % L2
        md_ok = row_ok[:, None] & d_ok[None, :]
        q = _load_rows(Q + b * sqb + h * sqh, x0, x1, x2, sq0, sq1, sq2, offs_d, md_ok)
        do = _load_rows(DO + b * sdb + h * sdh, x0, x1, x2, sd0, sd1, sd2, offs_d, md_ok)
        lse2, delta = _row_stats(LSE, DELTA, b * slb + h * slh + x0 * sl0 + x1 * sl1 + x2 * sl2, row_ok)
        st = tl.dot(ak, tl.trans(q), input_precision=DOT_PREC) * qk_scale2
        zt = 1.0
        if DROPOUT:
            zt = _dropout_scale(seed, rng_offset, ((b * n_heads + h) * n_tokens + offs_n)[None, :],
                                (n_tokens + offs_e)[:, None], n_keys, p_drop)
        dk, dv = _dkv_step(st, lse2, delta, q, do, av, dk, dv, zt, DROPOUT, DOT_PREC)
    out = (((ch * n_batch + b) * n_extra + offs_e[:, None]) * n_heads + h) * head_dim + offs_d[None, :]
    tl.store(DAK + out, dk * scale, mask=ed_ok)
    tl.store(DAV + out, dv, mask=ed_ok)
