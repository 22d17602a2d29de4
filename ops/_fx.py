"""torch.fx symbolic tracing of models built on the ops (timm's FX feature extraction, torchvision's
``create_feature_extractor``, timm's ``test_model_forward_fx``): every public op function and module is a leaf.

A symbolic trace runs Python on ``Proxy`` objects without sizes, so an op's input checks, backend choice and size
logic cannot run then. As leaves they appear as one node each (a ``call_function`` / ``call_module``) and run on
real tensors when the traced graph runs. Functions are leaves twice over: ``torch.fx.wrap`` in ``ops/__init__.py``
(any tracer, for calls spelt ``ops.na2d(...)``) and timm's ``register_notrace_function`` (for ``from ops import
na2d`` callers traced through timm's helpers); modules through timm's ``register_notrace_module``.
"""
from __future__ import annotations

from collections.abc import Iterable

from timm.layers import register_notrace_function, register_notrace_module
from torch import nn

__all__ = ['register_fx_leaves']


def register_fx_leaves(objects: Iterable) -> None:
    """Register each ``nn.Module`` subclass in ``objects`` with timm as a notrace module, each function as a notrace
    function."""
    for obj in objects:
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            register_notrace_module(obj)
        elif callable(obj) and not isinstance(obj, type):
            register_notrace_function(obj)
