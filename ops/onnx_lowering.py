"""What every ONNX lowering of an attnzoo custom op shares (imported only when exporting: it imports onnxscript);
public, so that an op defined outside ``ops`` (a backbone's) writes its lowering the same way.

A lowering is an onnxscript *trace-only* function: plain Python that runs once at export time on the exporter's
values and emits default-domain ONNX ops (opset 18), so the file runs in any ONNX runtime without plugins. Static
arguments (kernel sizes, flags) arrive as Python values; sizes that may be symbolic under dynamic shapes (a padded
map, MaxViT's grid dilation, TransNeXt's pool size) arrive as a Python list whose entries are ints or scalar INT64
values: :func:`ints` turns either into scalar INT64 values, and every size-dependent index is computed in the graph
from ``Shape`` (never from the size seen at export), so one file serves every input size.

:func:`lowering` registers a function two ways: in onnxscript's torchlib registry, which ``torch.onnx.export``
(dynamo) reads on every export, so the standard call needs nothing else; and in :data:`TABLE`, what
:func:`ops.onnx_translation_table` hands out for ``custom_translation_table=``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx_ir as ir
from onnxscript.function_libs.torch_lib.registration import torch_op
from onnxscript.onnx_opset import opset18 as op

__all__ = ['op', 'lowering', 'TABLE', 'ints', 'const', 'dim', 'vec', 'compute_dtype', 'safe_softmax']

TABLE: dict[str, Callable] = {}  # 'attnzoo::name' -> trace-only onnxscript function


def lowering(qualname: str) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the ONNX lowering of custom op ``qualname`` (``'attnzoo::name'``)."""
    def wrap(fn: Callable) -> Callable:
        traced = torch_op(qualname, trace_only=True)(fn)
        TABLE[qualname] = traced
        return traced
    return wrap


def const(value: int | float | Sequence[int], dtype: ir.DataType = ir.DataType.INT64):
    """A constant tensor: a scalar for a Python number, 1-D for a list."""
    return op.Constant(value=ir.tensor(value, dtype=dtype))


def ints(values, n: int | None = None) -> list:
    """Scalar INT64 values of a size list: a Python list of ints / scalar values, or a 1-D INT64 tensor of ``n``."""
    if isinstance(values, (list, tuple)):
        return [const(v) if isinstance(v, int) else op.Reshape(op.Cast(v, to=ir.DataType.INT64), const([]))
                for v in values]
    return [op.Gather(values, const(i), axis=0) for i in range(n)]


def dim(x, axis: int):
    """Scalar INT64: the size of ``x`` along ``axis`` at run time."""
    return op.Squeeze(op.Shape(x, start=axis, end=axis + 1 if axis != -1 else None), const([0]))


def vec(*sizes):
    """A 1-D INT64 shape from ints, scalar INT64 values and 1-D INT64 pieces (e.g. a ``Shape`` slice)."""
    return op.Concat(*(const([s]) if isinstance(s, int) else op.Reshape(s, const([-1])) for s in sizes), axis=0)


def compute_dtype(x) -> ir.DataType:
    """The dtype the eager backends accumulate in: float64 for float64 inputs, float32 otherwise."""
    return ir.DataType.DOUBLE if x.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT


def safe_softmax(logits, axis: int = -1):
    """``(probabilities, lse)`` along ``axis``; a row without a finite logit gets probabilities 0 and lse -inf (the
    eager ops' rule; ONNX ``Softmax`` would give NaN)."""
    axes = const([axis])
    top = op.ReduceMax(logits, axes, keepdims=1)
    top = op.Where(op.IsInf(top), op.CastLike(const(0.0, ir.DataType.FLOAT), top), top)
    e = op.Exp(op.Sub(logits, top))
    total = op.ReduceSum(e, axes, keepdims=1)
    zero = op.CastLike(const(0.0, ir.DataType.FLOAT), total)
    probs = op.Div(e, op.Where(op.Greater(total, zero), total, op.CastLike(const(1.0, ir.DataType.FLOAT), total)))
    lse = op.Squeeze(op.Add(op.Log(total), top), axes)
    return probs, lse
