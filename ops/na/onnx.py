"""ONNX lowerings of ``attnzoo::na_forward`` and ``attnzoo::na_av_forward`` (default-domain ops, opset 18).

The neighbourhood of :mod:`ops.na.pattern` computed in the graph from the run-time map size: per axis the key index
and validity of every (query, window slot) pair, ``[L, k]``, from ``Range`` and integer arithmetic (the rules of
:func:`ops.na.pattern.axis_neighbors`: window halves, dilation groups, stride leaders, causal, ``border``,
``valid_shape``), combined row-major into ``[N, K]`` (``K = prod(kernel_size)``). Attention then gathers the ``K``
neighbours of every query (``Gather``: ``[B, heads, N, K, D]``, NATTEN's unfused memory, never ``N x N``), takes
their logits with a batched ``MatMul``, adds the relative position bias gathered from ``rpb`` by the same pairs,
masks invalid slots, appends the extra tokens' logits to the same softmax and weighs the gathered values. Absent
optional inputs are ``None``; dropout is a training feature and is not exported.
"""
# ruff: noqa: UP045  (onnxscript parses these signatures and does not accept `X | None`)
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import onnx_ir as ir
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat
from onnxscript.onnx_types import INT64

from ..onnx_lowering import compute_dtype, const, dim, ints, lowering, op, safe_softmax, vec

__all__ = ['neighbourhood']

_I64 = ir.DataType.INT64


def _axis(length, kernel: int, stride: int, dilation, causal: bool, border: str):
    """One axis: key index ``[L, k]``, validity ``[L, k]`` (``None``: all valid) and rpb offset ``[L, k]``."""
    one, zero = const(1), const(0)
    q = op.Range(zero, length, one)
    group, qg = op.Mod(q, dilation), op.Div(q, dilation)
    group_len = op.Div(op.Sub(op.Add(op.Sub(length, group), dilation), one), dilation)
    last = op.Unsqueeze(op.Sub(group_len, one), const([1]))
    j = const([list(range(kernel))])  # [1, k]
    block = op.Mul(op.Div(qg, const(stride)), const(stride))
    if causal:
        leader = op.Min(op.Add(block, const(stride - 1)), op.Sub(group_len, one))
        start = op.Unsqueeze(op.Max(op.Sub(leader, const(kernel - 1)), zero), const([1]))
        valid = op.Less(j, op.Sub(op.Unsqueeze(qg, const([1])), op.Sub(start, one)))
        pos = op.Add(start, op.Where(valid, j, zero))
    else:
        leader = op.Unsqueeze(op.Min(op.Add(block, const(stride // 2)), op.Sub(group_len, one)), const([1]))
        if border == 'mask':
            pos = op.Add(op.Sub(leader, const(kernel // 2)), j)
            valid = op.And(op.GreaterOrEqual(pos, zero), op.LessOrEqual(pos, last))
            pos = op.Min(op.Max(pos, zero), last)
        else:
            start = op.Min(op.Max(op.Sub(leader, const(kernel // 2)), zero), op.Sub(last, const(kernel - 1)))
            pos, valid = op.Add(start, j), None
    idx = op.Add(op.Mul(pos, dilation), op.Unsqueeze(group, const([1])))
    rel = op.Add(op.Div(op.Sub(idx, op.Unsqueeze(q, const([1]))), dilation), const(kernel - 1))
    if valid is not None:
        rel = op.Where(valid, rel, zero)
    return idx, valid, rel


def _spread(x, axis: int, ndim: int):
    """``[L_a, k_a]`` -> rank ``2 * ndim`` with ``L_a`` at position ``axis`` and ``k_a`` at ``ndim + axis``."""
    return op.Unsqueeze(x, const([i for i in range(2 * ndim) if i not in (axis, ndim + axis)]))


def neighbourhood(shape: Sequence, kernel_size: Sequence[int], stride: Sequence[int], dilation: Sequence,
                  is_causal: Sequence[int], border: str, valid_shape: Sequence | None = None):
    """``(index [N, K], valid [N, K] bool or None, rpb index [N, K])`` of every (query, window slot) pair over the
    row-major tokens of a map of ``shape`` (scalar INT64 values); slot order as :mod:`ops.na.pattern`."""
    ndim = len(kernel_size)
    flat = rel = valid = None
    for a in range(ndim):
        idx, ok, r = _axis(shape[a], kernel_size[a], stride[a], dilation[a], bool(is_causal[a]), border)
        if valid_shape is not None:
            inside = op.Less(idx, valid_shape[a])
            ok = inside if ok is None else op.And(ok, inside)
        token_stride = const(1)
        for length in shape[a + 1:]:
            token_stride = op.Mul(token_stride, length)
        idx = _spread(op.Mul(idx, token_stride), a, ndim)
        r = _spread(op.Mul(r, const(math.prod(2 * k - 1 for k in kernel_size[a + 1:]))), a, ndim)
        flat = idx if flat is None else op.Add(flat, idx)
        rel = r if rel is None else op.Add(rel, r)
        if ok is not None:
            ok = _spread(ok, a, ndim)
            valid = ok if valid is None else op.And(valid, ok)
    pairs = vec(const([-1]), math.prod(kernel_size))
    if valid is not None:
        valid = op.Reshape(op.Expand(valid, op.Shape(flat)), pairs)
    return op.Reshape(flat, pairs), valid, op.Reshape(op.Expand(rel, op.Shape(flat)), pairs)


def _heads_first(x, dtype):
    """``[B, *S, H, D]`` -> ``[B, H, N, D]`` in ``dtype``."""
    x = op.Reshape(x, vec(const([0, -1]), op.Shape(x, start=-2)))
    return op.Cast(op.Transpose(x, perm=[0, 2, 1, 3]), to=dtype)


def _scalar(value: float, dtype):
    return op.Cast(const(float(value), ir.DataType.DOUBLE), to=dtype)


def _spatial(x, ndim: int) -> list:
    return [dim(x, 1 + a) for a in range(ndim)]


@lowering('attnzoo::na_forward')
def na_forward(query: TFloat, key: TFloat, value: TFloat, kernel_size: Sequence[int], stride: Sequence[int],
               dilation: Sequence[INT64], is_causal: Sequence[int], valid_shape: Optional[Sequence[INT64]],
               scale: float, rpb: Optional[TFloat], additional_keys: Optional[TFloat],
               additional_values: Optional[TFloat], backend: str, dropout_p: float = 0.0,
               dropout_seed: Optional[INT64] = None, border: str = 'clamp') -> tuple[TFloat, TFloat]:
    """``(out [B, *S, H, D], lse [B, *S, H])`` as the eager op (dropout is not exported)."""
    if dropout_p:
        raise ValueError('attention dropout (dropout_p > 0) is a training feature and cannot be exported to ONNX; '
                         'export the model in eval mode')
    ndim = len(kernel_size)
    dtype = compute_dtype(query)
    index, valid, rel = neighbourhood(_spatial(query, ndim), kernel_size, stride, ints(dilation, ndim), is_causal,
                                      border, None if valid_shape is None else ints(valid_shape, ndim))
    q, k, v = (_heads_first(t, dtype) for t in (query, key, value))
    keys = op.Gather(k, index, axis=2)  # [B, H, N, K, D]
    logits = op.Squeeze(op.MatMul(keys, op.Unsqueeze(q, const([-1]))), const([-1]))
    logits = op.Mul(logits, _scalar(scale, dtype))  # [B, H, N, K]
    if rpb is not None:
        table = op.Reshape(op.Cast(rpb, to=dtype), const([0, -1]))  # [H, prod(2k-1)]
        logits = op.Add(logits, op.Gather(table, rel, axis=1))  # + [H, N, K]
    if valid is not None:
        logits = op.Where(valid, logits, _scalar(float('-inf'), dtype))
    slots = math.prod(kernel_size)
    if additional_keys is not None:
        ak, av = (op.Cast(op.Transpose(t, perm=[0, 2, 1, 3]), to=dtype) for t in (additional_keys, additional_values))
        extra = op.Mul(op.MatMul(q, op.Transpose(ak, perm=[0, 1, 3, 2])), _scalar(scale, dtype))
        probs, lse = safe_softmax(op.Concat(logits, extra, axis=-1))
        last = const([-1])
        local = op.Slice(probs, const([0]), const([slots]), last)
        extra_p = op.Slice(probs, const([slots]), const([2 ** 62]), last)
        out = op.Add(op.Squeeze(op.MatMul(op.Unsqueeze(local, const([-2])), op.Gather(v, index, axis=2)),
                                const([-2])), op.MatMul(extra_p, av))
    else:
        probs, lse = safe_softmax(logits)
        out = op.Squeeze(op.MatMul(op.Unsqueeze(probs, const([-2])), op.Gather(v, index, axis=2)), const([-2]))
    out = op.Reshape(op.Cast(op.Transpose(out, perm=[0, 2, 1, 3]), to=query.dtype), op.Shape(query))
    lse = op.Reshape(op.Transpose(lse, perm=[0, 2, 1]), op.Shape(query, end=-1))
    return out, lse


@lowering('attnzoo::na_av_forward')
def na_av_forward(weights: TFloat, value: TFloat, kernel_size: Sequence[int], stride: Sequence[int],
                  dilation: Sequence[INT64], is_causal: Sequence[int], border: str, backend: str) -> TFloat:
    """``out [B, *S, H, Dv] = sum_slot weights[..., slot] * value[key(slot)]`` over the valid slots."""
    ndim = len(kernel_size)
    dtype = compute_dtype(value)
    index, valid, _ = neighbourhood(_spatial(value, ndim), kernel_size, stride, ints(dilation, ndim), is_causal,
                                    border)
    w = _heads_first(weights, dtype)  # [B, H, N, K]
    if valid is not None:
        w = op.Where(valid, w, op.CastLike(const(0.0, ir.DataType.FLOAT), w))
    out = op.Squeeze(op.MatMul(op.Unsqueeze(w, const([-2])), op.Gather(_heads_first(value, dtype), index, axis=2)),
                     const([-2]))
    return op.Reshape(op.Cast(op.Transpose(out, perm=[0, 2, 1, 3]), to=value.dtype), op.Shape(value))
