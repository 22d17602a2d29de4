"""ONNX export of the attnzoo custom ops: where their lowerings live, and how ``torch.onnx.export`` finds them.

Every custom op of the zoo has an onnxscript lowering to default-domain ONNX ops (``ops/*/onnx.py``, helpers in
:mod:`ops.onnx_lowering`). torch 2.14's dynamo exporter builds its table of translations at the start of every
``torch.onnx.export`` call from torchlib, which reads onnxscript's torchlib registry
(``onnxscript.function_libs.torch_lib.registration``); a lowering module adds itself there when imported. The
lowering modules import onnxscript (two seconds), so ``import ops`` does not load them: it arranges for them to be
loaded right after that registry module is first imported (which the exporter does before it reads it), or at once
if it already was. So the standard call ``torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=...)`` needs
nothing else, and a process that never exports never imports onnxscript.

:func:`onnx_translation_table` is the documented, version-proof alternative that does not rely on the exporter
reading onnxscript's registry: ``torch.onnx.export(..., custom_translation_table=ops.onnx_translation_table())``.
Ops defined outside ``ops`` (a backbone's own op) add their lowering module with :func:`add_onnx_lowering_module`.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

import torch

__all__ = ['onnx_translation_table', 'register_onnx_lowerings', 'add_onnx_lowering_module']

_REGISTRY_MODULE = 'onnxscript.function_libs.torch_lib.registration'
_MODULES = ['ops._shape_onnx', 'ops.na.onnx', 'ops.routed.onnx', 'ops.dense.onnx_cpb']


def add_onnx_lowering_module(module: str) -> None:
    """Add the import path of a module that registers lowerings (with :func:`ops.onnx_lowering.lowering`);
    imported now if the exporter's registry is already loaded."""
    if module not in _MODULES:
        _MODULES.append(module)
    if _REGISTRY_MODULE in sys.modules:
        importlib.import_module(module)


def register_onnx_lowerings() -> None:
    """Import every lowering module (needs ``onnxscript``); idempotent."""
    if importlib.util.find_spec('onnxscript') is None:
        raise ImportError('exporting attnzoo ops to ONNX needs onnxscript: pip install onnx onnxscript onnxruntime '
                          "(or the package's [onnx] extra)")
    for module in _MODULES:
        importlib.import_module(module)


def onnx_translation_table() -> dict:
    """``{op overload: onnxscript function}`` for every attnzoo custom op, for ``torch.onnx.export(...,
    dynamo=True, custom_translation_table=ops.onnx_translation_table())``.

    Not needed with torch 2.14 (the exporter finds the lowerings itself); the explicit way for exporter versions
    that stop reading onnxscript's registry. Ops whose defining module is not imported (a backbone's) are left out.
    """
    register_onnx_lowerings()
    from .onnx_lowering import TABLE
    table = {}
    for qualname, fn in TABLE.items():
        namespace, name = qualname.split('::')
        packet = getattr(getattr(torch.ops, namespace), name, None)
        if packet is not None:
            table[packet.default] = fn
    return table


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register_onnx_lowerings` right after the registry module has been executed (a post-import
    hook: this finder only wraps the spec the other finders return, then leaves ``sys.meta_path``)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                register_onnx_lowerings()

            spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    """Arrange for the lowerings to be registered with the exporter (see the module docstring)."""
    if _REGISTRY_MODULE in sys.modules:
        register_onnx_lowerings()
    elif importlib.util.find_spec('onnxscript') is not None:
        sys.meta_path.insert(0, _AfterImport())
