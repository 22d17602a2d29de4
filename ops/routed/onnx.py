"""ONNX lowering of ``attnzoo::routed_forward`` (default-domain ops, opset 18).

The region partition of :mod:`ops.routed.regions` from the run-time map size (``Reshape`` / ``Transpose``); the
keys and values of every query region's ``topk`` routed regions are gathered (``Gather`` on the flattened
``batch x region`` axis: the official BiFormer gather, ``topk`` regions per query region, never the whole map), then
one batched ``MatMul`` per region for the logits, the masked softmax and the weighted sum.
"""
# ruff: noqa: UP045  (onnxscript parses these signatures and does not accept `X | None`)
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import onnx_ir as ir
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat
from onnxscript.onnx_types import INT64

from ..onnx_lowering import compute_dtype, const, dim, ints, lowering, op, safe_softmax, vec


def _to_regions(x, b, n_h, rh, n_w, rw, dtype):
    """``[B, H, W, heads, D]`` -> ``[B, heads, R, S, D]`` (row-major regions, row-major tokens inside)."""
    heads_d = op.Shape(x, start=3)
    x = op.Reshape(x, vec(b, n_h, rh, n_w, rw, heads_d))
    x = op.Transpose(x, perm=[0, 5, 1, 3, 2, 4, 6])
    return op.Cast(op.Reshape(x, vec(b, op.Shape(x, start=1, end=2), const([-1]), op.Mul(rh, rw),
                                     op.Shape(x, start=6))), to=dtype)


def _from_regions(x, b, n_h, rh, n_w, rw):
    """``[B, heads, R, S, D]`` -> ``[B, H, W, heads, D]``."""
    x = op.Reshape(x, vec(b, op.Shape(x, start=1, end=2), n_h, n_w, rh, rw, op.Shape(x, start=4)))
    x = op.Transpose(x, perm=[0, 2, 4, 3, 5, 1, 6])
    return op.Reshape(x, vec(b, op.Mul(n_h, rh), op.Mul(n_w, rw), op.Shape(x, start=5)))


def _gather_regions(x, flat_index, b, topk):
    """``x [B, heads, R, S, D]`` at ``flat_index [B, R, topk]`` (region + batch * R) -> ``[B, heads, R, topk*S, D]``."""
    x = op.Transpose(x, perm=[0, 2, 1, 3, 4])  # [B, R, heads, S, D]
    x = op.Reshape(x, vec(const([-1]), op.Shape(x, start=2)))  # [B * R, heads, S, D]
    x = op.Gather(x, flat_index, axis=0)  # [B, R, topk, heads, S, D]
    x = op.Transpose(x, perm=[0, 3, 1, 2, 4, 5])
    return op.Reshape(x, vec(b, op.Shape(x, start=1, end=3), const([-1]), op.Shape(x, start=5)))


@lowering('attnzoo::routed_forward')
def routed_forward(query: TFloat, key: TFloat, value: TFloat, indices: INT64, n_win: Sequence[INT64], scale: float,
                   valid_shape: Optional[Sequence[INT64]], backend: str) -> tuple[TFloat, TFloat]:
    """``(out [B, H, W, heads, Dv], lse [B, H, W, heads])`` as the eager op."""
    dtype = compute_dtype(query)
    n_h, n_w = ints(n_win, 2)
    b = dim(query, 0)
    rh, rw = op.Div(dim(query, 1), n_h), op.Div(dim(query, 2), n_w)
    q, k, v = (_to_regions(t, b, n_h, rh, n_w, rw, dtype) for t in (query, key, value))
    n_regions = op.Mul(n_h, n_w)
    topk = dim(indices, 2)
    offsets = op.Mul(op.Range(const(0), b, const(1)), n_regions)
    flat = op.Add(indices, op.Reshape(offsets, const([-1, 1, 1])))
    keys, values = _gather_regions(k, flat, b, topk), _gather_regions(v, flat, b, topk)
    logits = op.MatMul(q, op.Transpose(keys, perm=[0, 1, 2, 4, 3]))  # [B, heads, R, S, topk * S]
    logits = op.Mul(logits, op.Cast(const(float(scale), ir.DataType.DOUBLE), to=dtype))
    if valid_shape is not None:
        rows, cols = ints(valid_shape, 2)
        inside = op.And(op.Unsqueeze(op.Less(op.Range(const(0), dim(query, 1), const(1)), rows), const([1])),
                        op.Less(op.Range(const(0), dim(query, 2), const(1)), cols))  # [H, W]
        inside = op.Reshape(inside, vec(const([1]), op.Shape(inside), const([1, 1])))
        inside = op.Squeeze(_to_regions(inside, const(1), n_h, rh, n_w, rw, ir.DataType.BOOL), const([0, 1, 4]))
        ok = op.Gather(inside, indices, axis=0)  # [B, R, topk, S]
        ok = op.Unsqueeze(op.Reshape(ok, vec(b, n_regions, const([-1]))), const([1, 3]))
        logits = op.Where(ok, logits, op.Cast(const(float('-inf'), ir.DataType.DOUBLE), to=dtype))
    probs, lse = safe_softmax(logits)
    out = _from_regions(op.MatMul(probs, values), b, n_h, rh, n_w, rw)
    lse = op.Squeeze(_from_regions(op.Unsqueeze(lse, const([-1])), b, n_h, rh, n_w, rw), const([-1]))
    return op.Cast(out, to=query.dtype), lse
