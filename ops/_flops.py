"""fvcore FLOP handles: one registration point for every op family (counted on ``import ops``).

fvcore counts a multiply-add as one flop; attention costs ``pairs x head_dim`` for QK^T plus the same for AV.
"""
from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

__all__ = ['register_fvcore_handle', 'ivalue']


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
