"""The neighbourhood weighted sum ``na_av`` (NATTEN's ``na2d_av`` role): given per-query weights over the window
slots of a neighbourhood pattern, the weighted sum of the values those slots point to.

``out[q] = sum_slot weights[q, slot] * value[key(q, slot)]``, over the valid slots of :mod:`ops.na.pattern`'s
window (slot order there: row-major over axes; with ``border='mask'`` slot ``j`` is the centred offset
``j - kernel // 2``, and slots outside the map contribute nothing and get a zero weight gradient). TransNeXt adds
such a term (``q @ learnable_tokens + learnable_bias`` on its 3x3 window) to the softmax attention: the softmax part
runs on :func:`ops.na.neighborhood_attention`, this part here, and their sum is exact.

Runs as the custom op ``attnzoo::na_av_forward`` (fake impl, autograd through ``attnzoo::na_av_backward``, the
autocast rule of :mod:`ops._checks`) on a backend of op ``'na_av'`` in :mod:`ops._registry`: ``reference`` (dense,
the oracle) and ``torch`` (slot loop, memory O(V)).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import autocast_inputs, autocast_off, check_compatible, check_tensor, register_autocast, spatial_sizes
from .._registry import get_backend, resolve_backend
from ..maps import _recorder
from . import backends as _backends  # noqa: F401  (registers the backends)
from . import maps as _maps
from .custom_op import _spec
from .pattern import BoolOrTuple, IntOrTuple, make_spec

__all__ = ['na_av']


def na_av(weights: Tensor, value: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple = 1, dilation: IntOrTuple = 1,
          is_causal: BoolOrTuple = False, border: str = 'clamp', backend: str | None = None) -> Tensor:
    """Weighted sum over each query's neighbourhood window.

    Args:
        weights: ``[batch, *spatial, heads, prod(kernel_size)]``, one weight per window slot.
        value: ``[batch, *spatial, heads, value_dim]`` (1-3 spatial dims).
        kernel_size, stride, dilation, is_causal, border: the pattern, as in :func:`ops.na.na2d`.
        backend: ``None`` (``'torch'``) or a name from ``ops.backend_names('na_av')``.

    Returns ``[batch, *spatial, heads, value_dim]`` in ``value``'s dtype, differentiable in both inputs. Under
    ``torch.autocast`` both are cast to the autocast dtype; outside it they must share one dtype.
    """
    check_tensor('value', value)
    ndim = value.dim() - 3
    if ndim not in (1, 2, 3):
        raise ValueError(f'value must be [batch, *spatial (1-3 dims), heads, value_dim], got {tuple(value.shape)}')
    spec = make_spec(spatial_sizes(value, range(1, ndim + 1)), kernel_size, stride, dilation, is_causal, None,
                     border)
    check_tensor('weights', weights, ndim + 3, f'[batch, *spatial ({ndim} dims), heads, window slots]')
    slots = math.prod(spec.kernel_size)
    if tuple(weights.shape) != (*value.shape[:-1], slots):
        raise ValueError(f'weights must be {(*value.shape[:-1], slots)} = [*value.shape[:-1], prod(kernel_size)], '
                         f'got {tuple(weights.shape)}')
    check_compatible({'weights': weights, 'value': value})
    weights, value = autocast_inputs(weights, value)
    name = resolve_backend('na_av', backend, value.device, value.dtype)
    if _recorder.active is not None:
        _maps.record_av(weights, spec)
    return torch.ops.attnzoo.na_av_forward(weights, value, list(spec.kernel_size), list(spec.stride),
                                           list(spec.dilation), [int(c) for c in spec.is_causal], spec.border, name)


@torch.library.custom_op('attnzoo::na_av_forward', mutates_args=())
def na_av_forward(weights: Tensor, value: Tensor, kernel_size: list[int], stride: list[int], dilation: list[int],
                  is_causal: list[int], border: str, backend: str) -> Tensor:
    """``out [B, *S, H, Dv]`` of :func:`na_av` on backend ``backend``."""
    spec = _spec(kernel_size, stride, dilation, is_causal, None, border)
    with autocast_off(value.device.type):
        return get_backend('na_av', backend).forward(weights, value, spec).contiguous()


@na_av_forward.register_fake
def _(weights, value, kernel_size, stride, dilation, is_causal, border, backend):
    return value.new_empty(value.shape)


@torch.library.custom_op('attnzoo::na_av_backward', mutates_args=())
def na_av_backward(grad_out: Tensor, weights: Tensor, value: Tensor, kernel_size: list[int], stride: list[int],
                   dilation: list[int], is_causal: list[int], border: str, backend: str) -> tuple[Tensor, Tensor]:
    """``(d_weights, d_value)``."""
    spec = _spec(kernel_size, stride, dilation, is_causal, None, border)
    with autocast_off(value.device.type):
        dw, dv = get_backend('na_av', backend).backward(grad_out, weights, value, spec)
    return dw.contiguous(), dv.contiguous()


@na_av_backward.register_fake
def _(grad_out, weights, value, kernel_size, stride, dilation, is_causal, border, backend):
    return weights.new_empty(weights.shape), value.new_empty(value.shape)


def _setup_context(ctx, inputs, output):
    weights, value, *args = inputs
    ctx.save_for_backward(weights, value)
    ctx.args = args


def _backward(ctx, grad_out):
    weights, value = ctx.saved_tensors
    dw, dv = na_av_backward(grad_out.contiguous(), weights, value, *ctx.args)
    return (dw, dv) + (None,) * len(ctx.args)


torch.library.register_autograd('attnzoo::na_av_forward', _backward, setup_context=_setup_context)
register_autocast('attnzoo::na_av_forward')
