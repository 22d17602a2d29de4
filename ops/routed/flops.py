"""FLOP count of routed attention, its fvcore handle and ``FlopCounterMode`` formulas (registered on ``import ops``;
conventions in :mod:`ops._flops`).

Every query sees ``topk`` regions of ``S = H * W / R`` tokens: ``B * heads * H * W * topk * S`` (query, key) pairs,
each ``head_dim`` multiply-adds for QK^T and ``value_dim`` for AV. The routing itself (region means, the ``R x R``
affinity) is plain torch code that fvcore counts on its own.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .._flops import register_flop_formula, register_fvcore_handle
from . import custom_op as _custom_op  # noqa: F401  (defines the ops the formulas attach to)

__all__ = ['routed_flops']

OP_NAME = 'attnzoo::routed_forward'


def routed_flops(query_shape: Sequence[int], value_dim: int, n_regions: int, topk: int) -> int:
    """fvcore-style flops (multiply-adds) of one call on ``[B, H, W, heads, head_dim]`` queries."""
    b, hgt, wid, h, d = query_shape
    tokens = hgt * wid
    return b * h * tokens * topk * (tokens // n_regions) * (d + value_dim)


def _routed_flop_jit(inputs: list, outputs: list) -> Counter:
    from fvcore.nn.jit_handles import get_shape
    q_shape, v_shape, idx_shape = get_shape(inputs[0]), get_shape(inputs[2]), get_shape(inputs[3])
    flops = routed_flops(q_shape, v_shape[-1], idx_shape[1], idx_shape[2])
    return Counter({'routed_attention': flops})


register_fvcore_handle(OP_NAME, _routed_flop_jit)


def _routed_forward_formula(query, key, value, indices, n_win, scale, valid_shape, backend, *, out_shape=None,
                            **kwargs) -> int:
    return 2 * routed_flops(query, value[-1], indices[1], indices[2])


def _routed_backward_formula(grad_out, grad_lse, query, key, value, out, lse, indices, n_win, scale, valid_shape,
                             backend, *, out_shape=None, **kwargs) -> int:
    return 4 * routed_flops(query, value[-1], indices[1], indices[2])


register_flop_formula(OP_NAME, _routed_forward_formula)
register_flop_formula('attnzoo::routed_backward', _routed_backward_formula)
