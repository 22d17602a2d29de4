"""ONNX lowering of ``attnzoo::transnext_stage_tables`` (:mod:`ops.dense.cpb`), default-domain ops.

The tables from the run-time map and pool sizes, in the eager op's float32 arithmetic: per axis the query
positions, the pooled keys at the mean of their adaptive-pooling bin (``(start + end - 1) / 2``, exactly what
``adaptive_avg_pool1d`` of the positions gives), the relative coordinates ``(q - k) / (pretrain - 1) * 8`` and their
sorted distinct values with each pair's index (ONNX ``Unique``, as ``torch.unique``); the log-spaced table and the
length scales as :func:`ops.dense.cpb._stage_tables`. ``log2`` is ``Log(x) / Log(2)`` (ONNX has no Log2), one
rounding step away from torch's.
"""
from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.onnx_types import INT64

from ops.onnx_lowering import const, lowering, op

_F32, _F64 = ir.DataType.FLOAT, ir.DataType.DOUBLE


def _axis(q_len, k_len, pretrain: int):
    """Sorted distinct relative coordinates ``[U]`` and every (query, key) pair's index ``[q_len, k_len]``."""
    zero, one = const(0), const(1)
    q = op.Cast(op.Range(zero, q_len, one), to=_F32)
    i = op.Range(zero, k_len, one)
    start = op.Div(op.Mul(i, q_len), k_len)
    end = op.Div(op.Sub(op.Add(op.Mul(op.Add(i, one), q_len), k_len), one), k_len)
    k = op.Div(op.Cast(op.Sub(op.Add(start, end), one), to=_F32), const(2.0, _F32))
    rel = op.Sub(op.Unsqueeze(q, const([1])), op.Unsqueeze(k, const([0])))
    rel = op.Mul(op.Div(rel, const(float(pretrain - 1), _F32)), const(8.0, _F32))
    values, _, inverse, _ = op.Unique(op.Reshape(rel, const([-1])), sorted=1)
    return values, op.Reshape(inverse, op.Shape(rel))


def _border_counts(length, window: int):
    """Valid keys per query of a centred, border-masked window (``axis_window(..., border='mask')``)."""
    q = op.Range(const(0), length, const(1))
    first = op.Sub(q, const(window // 2))
    return op.Sub(op.Min(op.Add(first, const(window)), length), op.Max(first, const(0)))


@lowering('attnzoo::transnext_stage_tables')
def transnext_stage_tables(h: INT64, w: INT64, ph: INT64, pw: INT64, pth: int, ptw: int, window: int, device: str):
    """``(table [Uh, Uw, 2], ih [h, ph], iw [w, pw], scale [h * w])``."""
    vh, ih = _axis(h, ph, pth)
    vw, iw = _axis(w, pw, ptw)
    grid = op.Concat(op.Shape(vh), op.Shape(vw), axis=0)
    table = op.Concat(op.Unsqueeze(op.Expand(op.Unsqueeze(vh, const([1])), grid), const([-1])),
                      op.Unsqueeze(op.Expand(op.Unsqueeze(vw, const([0])), grid), const([-1])), axis=-1)
    log2 = op.Div(op.Log(op.Add(op.Abs(table), const(1.0, _F32))), const(math.log(2.0), _F32))
    table = op.Div(op.Mul(op.Sign(table), log2), const(3.0, _F32))  # / log2(8)
    n_pool = op.Mul(ph, pw)
    if window == 0:  # full attention: log(P) for every query, float64
        scale = op.Expand(op.Log(op.Cast(n_pool, to=_F64)), op.Reshape(op.Mul(h, w), const([1])))
    else:
        local = op.Mul(op.Unsqueeze(_border_counts(h, window), const([1])), _border_counts(w, window))
        scale = op.Log(op.Cast(op.Reshape(op.Add(local, n_pool), const([-1])), to=_F32))
    return table, ih, iw, scale
