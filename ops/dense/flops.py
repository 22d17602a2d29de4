"""fvcore FLOP handle for ``aten::scaled_dot_product_attention`` (fvcore 0.1.5 does not count it), and the
``FlopCounterMode`` formula of the CPU flash-attention kernel SDPA runs on CPU (torch counts only its GPU kernels).

Registered on ``import ops``, so it counts every SDPA call in a traced model (ours and timm's), with the
convention of :mod:`ops.na.flops`: a multiply-add is one flop, ``N x M x head_dim`` for QK^T plus
``N x M x value_dim`` for AV per batch and head; a causal call counts only the pairs its mask keeps. The
``return_lse`` path of :func:`ops.dense_attention` runs as two matmuls, which fvcore counts the same way.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
from torch.utils.flop_counter import flop_registry

from .._flops import ivalue, register_flop_formula, register_fvcore_handle

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


# FlopCounterMode: torch counts its CUDA SDPA kernels, not the CPU flash kernel that CPU SDPA calls run; the zoo's
# convention (FlopCounterMode's own: twice fvcore's count, backward twice forward) for that one too.
_CPU_FLASH = 'aten::_scaled_dot_product_flash_attention_for_cpu'


def _cpu_flash_formula(query_shape, key_shape, value_shape, dropout_p=0., is_causal=False, **_) -> int:
    return 2 * sdpa_flops(query_shape, key_shape, value_shape, is_causal)


def _cpu_flash_backward_formula(grad_out_shape, query_shape, key_shape, value_shape, *args, is_causal=False,
                                **_) -> int:
    causal = args[3] if len(args) > 3 else is_causal  # out, logsumexp, dropout_p, is_causal
    return 4 * sdpa_flops(query_shape, key_shape, value_shape, causal)


if getattr(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, 'default', None) not in flop_registry:
    register_flop_formula(_CPU_FLASH, _cpu_flash_formula)
    register_flop_formula(_CPU_FLASH + '_backward', _cpu_flash_backward_formula)
