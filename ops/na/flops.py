"""FLOP count of neighborhood attention, and its fvcore handle (registered on ``import ops``).

``pairs`` is the exact number of (query, key) pairs the pattern allows (extra tokens included).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from .._flops import ivalue, register_fvcore_handle
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


AV_OP_NAME = 'attnzoo::na_av_forward'


def _na_av_flop_jit(inputs: list, outputs: list) -> Counter:
    from fvcore.nn.jit_handles import get_shape
    b, *shape, h, d = get_shape(inputs[1])
    ks, st, dl, ca, border = (ivalue(v) for v in inputs[2:7])
    spec = NASpec(tuple(ks), tuple(st), tuple(dl), tuple(bool(c) for c in ca), None, border)
    return Counter({'neighborhood_weighted_sum': b * h * d * na_pairs(shape, spec)})


register_fvcore_handle(AV_OP_NAME, _na_av_flop_jit)
