"""FLOP count of neighborhood attention, its fvcore handles and ``FlopCounterMode`` formulas (registered on
``import ops``; conventions in :mod:`ops._flops`).

``pairs`` is the exact number of (query, key) pairs the pattern allows (extra tokens included).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from .._flops import ivalue, register_flop_formula, register_fvcore_handle
from . import av as _av  # noqa: F401  (defines attnzoo::na_av_*, which a formula below attaches to)
from . import custom_op as _custom_op  # noqa: F401  (defines attnzoo::na_*)
from .pattern import NASpec, axis_neighbors

__all__ = ['na_pairs', 'na_flops']

OP_NAME = 'attnzoo::na_forward'


def na_pairs(shape: Sequence[int], spec: NASpec, n_extra: int = 0) -> int:
    """Number of (query, key) pairs one batch element and head computes (per-axis counts are separable)."""
    pairs = 1
    for axis, length in enumerate(shape):
        idx, valid = axis_neighbors(length, spec.kernel_size[axis], spec.stride[axis], spec.dilation[axis],
                                    spec.is_causal[axis], border=spec.border)
        if spec.valid_shape is not None:
            valid = valid & (idx < spec.valid_shape[axis])
        pairs *= int(valid.sum())
    return pairs + math.prod(shape) * n_extra


def na_flops(query_shape: Sequence[int], spec: NASpec, n_extra: int = 0) -> int:
    """fvcore-style flops (multiply-adds) of one call on ``[B, *S, H, D]``: QK^T plus AV."""
    b, *shape, h, d = query_shape
    return 2 * b * h * d * na_pairs(shape, spec, n_extra)


def _na_flop_jit(inputs: list, outputs: list) -> Counter:
    from fvcore.nn.jit_handles import get_shape
    q_shape = get_shape(inputs[0])
    ks, st, dl, ca, valid = (ivalue(v) for v in inputs[3:8])
    border = ivalue(inputs[15]) if len(inputs) > 15 else 'clamp'
    spec = NASpec(tuple(ks), tuple(st), tuple(dl), tuple(bool(c) for c in ca), None if valid is None else tuple(valid),
                  border)
    add_k = get_shape(inputs[10]) if inputs[10].type().kind() == 'TensorType' else None
    return Counter({'neighborhood_attention': na_flops(q_shape, spec, add_k[1] if add_k else 0)})


register_fvcore_handle(OP_NAME, _na_flop_jit)


def _spec_of(kernel_size, stride, dilation, is_causal, valid_shape, border) -> NASpec:
    return NASpec(tuple(kernel_size), tuple(stride), tuple(dilation), tuple(bool(c) for c in is_causal),
                  None if valid_shape is None else tuple(valid_shape), border)


def _na_counter_flops(query, kernel_size, stride, dilation, is_causal, valid_shape, additional_keys, border) -> int:
    spec = _spec_of(kernel_size, stride, dilation, is_causal, valid_shape, border)
    return 2 * na_flops(query, spec, additional_keys[1] if additional_keys is not None else 0)


def _na_forward_formula(query, key, value, kernel_size, stride, dilation, is_causal, valid_shape, scale, rpb,
                        additional_keys, additional_values, backend, dropout_p=0.0, dropout_seed=None,
                        border='clamp', *, out_shape=None, **kwargs) -> int:
    return _na_counter_flops(query, kernel_size, stride, dilation, is_causal, valid_shape, additional_keys, border)


def _na_backward_formula(grad_out, grad_lse, query, key, value, out, lse, kernel_size, stride, dilation, is_causal,
                         valid_shape, scale, rpb, additional_keys, additional_values, backend, need_rpb, need_extra,
                         dropout_p=0.0, dropout_seed=None, border='clamp', *, out_shape=None, **kwargs) -> int:
    return 2 * _na_counter_flops(query, kernel_size, stride, dilation, is_causal, valid_shape, additional_keys,
                                 border)


register_flop_formula(OP_NAME, _na_forward_formula)
register_flop_formula('attnzoo::na_backward', _na_backward_formula)


AV_OP_NAME = 'attnzoo::na_av_forward'


def _na_av_flop_jit(inputs: list, outputs: list) -> Counter:
    from fvcore.nn.jit_handles import get_shape
    b, *shape, h, d = get_shape(inputs[1])
    ks, st, dl, ca, border = (ivalue(v) for v in inputs[2:7])
    spec = NASpec(tuple(ks), tuple(st), tuple(dl), tuple(bool(c) for c in ca), None, border)
    return Counter({'neighborhood_weighted_sum': b * h * d * na_pairs(shape, spec)})


register_fvcore_handle(AV_OP_NAME, _na_av_flop_jit)


def _na_av_counter_flops(value, kernel_size, stride, dilation, is_causal, border) -> int:
    b, *shape, h, d = value
    return 2 * b * h * d * na_pairs(shape, _spec_of(kernel_size, stride, dilation, is_causal, None, border))


def _na_av_forward_formula(weights, value, kernel_size, stride, dilation, is_causal, border, backend, *,
                           out_shape=None, **kwargs) -> int:
    return _na_av_counter_flops(value, kernel_size, stride, dilation, is_causal, border)


def _na_av_backward_formula(grad_out, weights, value, kernel_size, stride, dilation, is_causal, border, backend, *,
                            out_shape=None, **kwargs) -> int:  # d_weights and d_value: one product each
    return 2 * _na_av_counter_flops(value, kernel_size, stride, dilation, is_causal, border)


register_flop_formula(AV_OP_NAME, _na_av_forward_formula)
register_flop_formula('attnzoo::na_av_backward', _na_av_backward_formula)
