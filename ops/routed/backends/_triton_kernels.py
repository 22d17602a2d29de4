"""Triton kernels of the fused routed-attention backend (see ``triton_routed`` for the design notes).

Tensors keep their ``[B, H, W, heads, D]`` layout (last dim contiguous); a program addresses tokens by their map
coordinates. Region ``r`` of the ``n_w``-wide region grid holds tokens ``(r // n_w * RH + t // RW,
r % n_w * RW + t % RW)`` for ``t < S = RH * RW``. A query region's keys are the *virtual sequence* of its ``topk``
routed regions' tokens (position ``p``: region ``indices[p // S]``, token ``p % S``), walked in ``BLOCK_N``-long
tiles with an online softmax; the dK/dV kernel walks, for one key region, the virtual sequence of the query
regions that routed to it (its inverse list, CSR). Logits are in base 2 (``log2 e`` folded into the scale).
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _coords(region, t, n_w, RH: tl.constexpr, RW: tl.constexpr):
    """Map coordinates of token ``t`` of region ``region``."""
    return (region // n_w) * RH + t // RW, (region % n_w) * RW + t % RW


@triton.jit
def _load_rows(base, y, x, sy, sx, offs, mask):
    return tl.load(base + y[:, None] * sy + x[:, None] * sx + offs[None, :], mask=mask, other=0.0)


@triton.jit
def _routed_keys(idx_base, pos, n_keys, n_w, valid_h, valid_w, RH: tl.constexpr, RW: tl.constexpr):
    """Map coordinates and validity of positions ``pos`` of a query region's routed key sequence."""
    S: tl.constexpr = RH * RW
    in_seq = pos < n_keys
    region = tl.load(idx_base + pos // S, mask=in_seq, other=0)
    ky, kx = _coords(region, pos % S, n_w, RH, RW)
    return ky, kx, in_seq & (ky < valid_h) & (kx < valid_w)


@triton.jit
def _query_tile(n_w, QT: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr, BLOCK_M: tl.constexpr):
    """This program's query region, its rows' map coordinates and validity (axis 0: region * QT + tile)."""
    pid = tl.program_id(0)
    r = pid // QT
    rows = (pid % QT) * BLOCK_M + tl.arange(0, BLOCK_M)
    qy, qx = _coords(r, rows, n_w, RH, RW)
    return r, qy, qx, rows < RH * RW


@triton.jit
def _routed_fwd_kernel(
        Q, K, V, IDX, OUT, LSE,
        sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
        sob, soy, sox, soh, slb, sly, slx, slh, sib, sir,
        n_w, topk, valid_h, valid_w, head_dim, v_dim, qk_scale2,
        RH: tl.constexpr, RW: tl.constexpr, QT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        DOT_PREC: tl.constexpr,
):
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    r, qy, qx, row_ok = _query_tile(n_w, QT, RH, RW, BLOCK_M)
    offs_d, offs_e = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    d_ok, e_ok = offs_d < head_dim, offs_e < v_dim
    q = _load_rows(Q + b * sqb + h * sqh, qy, qx, sqy, sqx, offs_d, row_ok[:, None] & d_ok[None, :])
    k_base, v_base = K + b * skb + h * skh, V + b * svb + h * svh
    idx_base = IDX + b * sib + r * sir
    n_keys = topk * RH * RW
    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for p0 in range(0, n_keys, BLOCK_N):
        ky, kx, key_ok = _routed_keys(idx_base, p0 + tl.arange(0, BLOCK_N), n_keys, n_w, valid_h, valid_w, RH, RW)
        k = _load_rows(k_base, ky, kx, sky, skx, offs_d, key_ok[:, None] & d_ok[None, :])
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale2
        s = tl.where(key_ok[None, :], s, float('-inf'))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float('-inf'), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_rows(v_base, ky, kx, svy, svx, offs_e, key_ok[:, None] & e_ok[None, :])
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    o_ptr = OUT + b * sob + h * soh + qy[:, None] * soy + qx[:, None] * sox + offs_e[None, :]
    tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & e_ok[None, :])
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) * LN2, float('-inf'))
    tl.store(LSE + b * slb + h * slh + qy * sly + qx * slx, lse, mask=row_ok)


@triton.jit
def _row_stats(LSE, DELTA, off, row_ok):
    """Base-2 lse (``+inf`` where the query saw no key or the row is padding: its weights are 0) and delta."""
    lse = tl.load(LSE + off, mask=row_ok, other=float('-inf'))
    lse2 = tl.where(lse == float('-inf'), float('inf'), lse * LOG2E)
    return lse2, tl.load(DELTA + off, mask=row_ok, other=0.0)


@triton.jit
def _routed_bwd_dq_kernel(
        Q, K, V, DO, LSE, DELTA, IDX, DQ,
        sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
        sdb, sdy, sdx, sdh, slb, sly, slx, slh, sib, sir,
        n_w, topk, valid_h, valid_w, head_dim, v_dim, qk_scale2, scale,
        RH: tl.constexpr, RW: tl.constexpr, QT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        DOT_PREC: tl.constexpr,
):
    """dQ of one query tile: the forward's loop over its routed keys (lse and delta share LSE's strides)."""
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    r, qy, qx, row_ok = _query_tile(n_w, QT, RH, RW, BLOCK_M)
    offs_d, offs_e = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    d_ok, e_ok = offs_d < head_dim, offs_e < v_dim
    md_ok = row_ok[:, None] & d_ok[None, :]
    q = _load_rows(Q + b * sqb + h * sqh, qy, qx, sqy, sqx, offs_d, md_ok)
    do = _load_rows(DO + b * sdb + h * sdh, qy, qx, sdy, sdx, offs_e, row_ok[:, None] & e_ok[None, :])
    lse2, delta = _row_stats(LSE, DELTA, b * slb + h * slh + qy * sly + qx * slx, row_ok)
    k_base, v_base = K + b * skb + h * skh, V + b * svb + h * svh
    idx_base = IDX + b * sib + r * sir
    n_keys = topk * RH * RW
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for p0 in range(0, n_keys, BLOCK_N):
        ky, kx, key_ok = _routed_keys(idx_base, p0 + tl.arange(0, BLOCK_N), n_keys, n_w, valid_h, valid_w, RH, RW)
        k = _load_rows(k_base, ky, kx, sky, skx, offs_d, key_ok[:, None] & d_ok[None, :])
        v = _load_rows(v_base, ky, kx, svy, svx, offs_e, key_ok[:, None] & e_ok[None, :])
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale2
        p = tl.exp2(tl.where(key_ok[None, :], s, float('-inf')) - lse2[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
    tl.store(DQ + b * sqb + h * sqh + qy[:, None] * sqy + qx[:, None] * sqx + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=md_ok)


@triton.jit
def _routed_bwd_dkv_kernel(
        Q, K, V, DO, LSE, DELTA, OFFSETS, QREGIONS, DK, DV,
        sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
        sdb, sdy, sdx, sdh, slb, sly, slx, slh,
        n_regions, n_w, valid_h, valid_w, head_dim, v_dim, qk_scale2, scale,
        RH: tl.constexpr, RW: tl.constexpr, KT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        DOT_PREC: tl.constexpr,
):
    """dK, dV of one key tile (``BLOCK_N`` tokens of one key region): the virtual sequence of the tokens of every
    query region in its inverse list ``QREGIONS[OFFSETS[b, r] : OFFSETS[b, r + 1]]``, in ``BLOCK_M``-long tiles.
    Each key row is written by exactly one program: deterministic, no atomics. DK/DV share K/V's strides."""
    S: tl.constexpr = RH * RW
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    r = pid // KT
    rows = (pid % KT) * BLOCK_N + tl.arange(0, BLOCK_N)
    ky, kx = _coords(r, rows, n_w, RH, RW)
    rows_ok = rows < S
    key_ok = rows_ok & (ky < valid_h) & (kx < valid_w)
    offs_d, offs_e = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    d_ok, e_ok = offs_d < head_dim, offs_e < v_dim
    k_base, v_base = K + b * skb + h * skh, V + b * svb + h * svh
    k = _load_rows(k_base, ky, kx, sky, skx, offs_d, key_ok[:, None] & d_ok[None, :])
    v = _load_rows(v_base, ky, kx, svy, svx, offs_e, key_ok[:, None] & e_ok[None, :])
    start = tl.load(OFFSETS + b * n_regions + r)
    n_pos = (tl.load(OFFSETS + b * n_regions + r + 1) - start) * S
    q_base, do_base = Q + b * sqb + h * sqh, DO + b * sdb + h * sdh
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for p0 in range(0, n_pos, BLOCK_M):
        pos = p0 + tl.arange(0, BLOCK_M)
        pos_ok = pos < n_pos
        region = tl.load(QREGIONS + start + pos // S, mask=pos_ok, other=0)
        qy, qx = _coords(region, pos % S, n_w, RH, RW)
        q = _load_rows(q_base, qy, qx, sqy, sqx, offs_d, pos_ok[:, None] & d_ok[None, :])
        do = _load_rows(do_base, qy, qx, sdy, sdx, offs_e, pos_ok[:, None] & e_ok[None, :])
        lse2, delta = _row_stats(LSE, DELTA, b * slb + h * slh + qy * sly + qx * slx, pos_ok)
        st = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale2  # [BLOCK_N, BLOCK_M]
        pt = tl.exp2(tl.where(key_ok[:, None], st, float('-inf')) - lse2[None, :])
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PREC)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        dk += tl.dot((pt * (dpt - delta[None, :])).to(q.dtype), q, input_precision=DOT_PREC)
    out_ok = rows_ok[:, None]
    tl.store(DK + b * skb + h * skh + ky[:, None] * sky + kx[:, None] * skx + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=out_ok & d_ok[None, :])
    tl.store(DV + b * svb + h * svh + ky[:, None] * svy + kx[:, None] * svx + offs_e[None, :],
             dv.to(DV.dtype.element_ty), mask=out_ok & e_ok[None, :])
