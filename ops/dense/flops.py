"""fvcore FLOP handle for ``aten::scaled_dot_product_attention`` (fvcore 0.1.5 does not count it).

Registered on ``import ops``, so it counts every SDPA call in a traced model (ours and timm's), with the
convention of :mod:`ops.na.flops`: a multiply-add is one flop, ``N x M x head_dim`` for QK^T plus
``N x M x value_dim`` for AV per batch and head; a causal call counts only the pairs its mask keeps. The
``return_lse`` path of :func:`ops.dense_attention` runs as two matmuls, which fvcore counts the same way.
"""
from __future__ import annotations

import math
from collections import Counter

from .._flops import ivalue, register_fvcore_handle

__all__ = ['sdpa_flops']

OP_NAME = 'aten::scaled_dot_product_attention'


def sdpa_flops(query_shape, key_shape, value_shape, is_causal: bool = False) -> int:
    """Flops of SDPA on ``[..., N, D]`` queries, ``[..., M, D]`` keys and ``[..., M, Dv]`` values (heads-first)."""
    *lead, n, d = query_shape
    m, dv = key_shape[-2], value_shape[-1]
    if is_causal:  # SDPA's causal mask is top-left aligned: query i sees keys 0..min(i, M - 1)
        k = min(n, m)
        pairs = k * (k + 1) // 2 + (n - k) * m
    else:
        pairs = n * m
    return math.prod(lead) * pairs * (d + dv)


def _sdpa_flop_jit(inputs: list, outputs: list) -> Counter:
    from fvcore.nn.jit_handles import get_shape
    is_causal = bool(ivalue(inputs[5])) if len(inputs) > 5 else False
    flops = sdpa_flops(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]), is_causal)
    return Counter({'scaled_dot_product_attention': flops})


register_fvcore_handle(OP_NAME, _sdpa_flop_jit)
