"""FLOP counting of the custom ops: fvcore handles and ``torch.utils.flop_counter.FlopCounterMode`` formulas, one
registration point each for every op family (registered on ``import ops``).

fvcore counts a multiply-add as one flop; attention costs ``pairs x head_dim`` for QK^T plus the same for AV.
``FlopCounterMode`` counts a multiply-add as two (its ``aten.mm`` and SDPA formulas), so each op's formula there is
exactly twice its fvcore count, and a model's total under either counter stays in that counter's own convention.
The backward ops count twice their forward (dQ and dK from dS, dV and dP from dO: four products of the forward's
two), as torch's SDPA backward formula does.
"""
from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

import torch
from torch.utils.flop_counter import register_flop_formula as _register

__all__ = ['register_fvcore_handle', 'register_flop_formula', 'ivalue']


def ivalue(val):
    """Python value of a constant jit argument (also a ``prim::ListConstruct`` of constants)."""
    node = val.node()
    if node.kind() == 'prim::ListConstruct':
        return [ivalue(v) for v in node.inputs()]
    return val.toIValue()


def register_fvcore_handle(op_name: str, handle: Callable) -> None:
    """Make fvcore's default ``FlopCountAnalysis`` count ``op_name`` (a jit op name) with ``handle``."""
    try:
        with warnings.catch_warnings():  # fvcore's own torch.jit.script use warns on every import
            warnings.simplefilter('ignore', FutureWarning)
            flop_count = importlib.import_module('fvcore.nn.flop_count')
    except ImportError:
        return
    flop_count._DEFAULT_SUPPORTED_OPS[op_name] = handle


def register_flop_formula(op_name: str, formula: Callable) -> None:
    """Make ``FlopCounterMode`` count custom op ``op_name`` (``'attnzoo::name'``) with ``formula``, which gets the
    op's arguments with tensors replaced by their shapes (``torch.utils.flop_counter``'s convention)."""
    namespace, name = op_name.split('::')
    _register(getattr(getattr(torch.ops, namespace), name))(formula)
