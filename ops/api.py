"""Public functional API: ``na1d`` / ``na2d`` / ``na3d`` (NATTEN-compatible) and ``merge_attentions``.

Every argument is validated here, once, with errors that name it; the call then runs as the custom op
``attnzoo::na_forward`` on the backend chosen by :func:`ops.backends.resolve_backend`.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from ._custom_ops import spec_args
from ._pattern import BoolOrTuple, IntOrTuple, NASpec, make_spec
from .backends import get_backend, resolve_backend

__all__ = ['na1d', 'na2d', 'na3d', 'neighborhood_attention', 'merge_attentions']


def _check_tensor(name: str, x, ndim: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    if x.dim() != ndim + 3:
        raise ValueError(f'{name} must be [batch, *spatial ({ndim} dims), heads, head_dim] (rank {ndim + 3}) for '
                         f'na{ndim}d, got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got {x.dtype}')


def _validate(ndim: int, query, key, value, rpb, spec: NASpec, additional_keys, additional_values):
    for name, x in (('query', query), ('key', key), ('value', value)):
        _check_tensor(name, x, ndim)
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(f'query, key and value must have the same shape, got {tuple(query.shape)}, '
                         f'{tuple(key.shape)}, {tuple(value.shape)}')
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise TypeError(f'query, key and value must have the same dtype, got {query.dtype}, {key.dtype}, '
                        f'{value.dtype}')
    if key.device != query.device or value.device != query.device:
        raise ValueError(f'query, key and value must be on one device, got {query.device}, {key.device}, '
                         f'{value.device}')
    if query.numel() == 0:
        raise ValueError(f'query must not be empty, got shape {tuple(query.shape)}')
    heads, head_dim = query.shape[-2], query.shape[-1]
    if rpb is not None:
        if not isinstance(rpb, Tensor):
            raise TypeError(f'rpb must be a torch.Tensor or None, got {type(rpb).__name__}')
        want = (heads, *(2 * k - 1 for k in spec.kernel_size))
        if tuple(rpb.shape) != want:
            raise ValueError(f'rpb must have shape {want} = (heads, 2 * kernel_size - 1 per axis), got '
                             f'{tuple(rpb.shape)}')
        if not rpb.is_floating_point() or rpb.device != query.device:
            raise TypeError(f'rpb must be a floating-point tensor on {query.device}, got {rpb.dtype} on {rpb.device}')
    if (additional_keys is None) != (additional_values is None):
        raise ValueError('additional_keys and additional_values must be given together')
    if additional_keys is not None:
        for name, x in (('additional_keys', additional_keys), ('additional_values', additional_values)):
            if not isinstance(x, Tensor):
                raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
            if x.dim() != 4 or x.shape[0] not in (1, query.shape[0]) or tuple(x.shape[2:]) != (heads, head_dim):
                raise ValueError(f'{name} must be [batch (or 1), n_extra, heads={heads}, head_dim={head_dim}], '
                                 f'got {tuple(x.shape)}')
            if x.dtype != query.dtype or x.device != query.device:
                raise TypeError(f'{name} must match query ({query.dtype} on {query.device}), got {x.dtype} on '
                                f'{x.device}')
        if additional_keys.shape != additional_values.shape:
            raise ValueError(f'additional_keys and additional_values must have the same shape, got '
                             f'{tuple(additional_keys.shape)} and {tuple(additional_values.shape)}')


def neighborhood_attention(
        ndim: int,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        dilation: IntOrTuple = 1,
        is_causal: BoolOrTuple = False,
        scale: float | None = None,
        rpb: Tensor | None = None,
        additional_keys: Tensor | None = None,
        additional_values: Tensor | None = None,
        return_lse: bool = False,
        backend: str | None = None,
        valid_shape: Sequence[int] | None = None,
        dropout_p: float = 0.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """Generalized neighborhood attention over an ``ndim``-D token grid; see :func:`na2d`."""
    if ndim not in (1, 2, 3):
        raise ValueError(f'ndim must be 1, 2 or 3, got {ndim!r}')
    _check_tensor('query', query, ndim)
    spec = make_spec([int(n) for n in query.shape[1:-2]], kernel_size, stride, dilation, is_causal, valid_shape)
    _validate(ndim, query, key, value, rpb, spec, additional_keys, additional_values)
    if additional_keys is not None and additional_keys.shape[1] == 0:
        additional_keys = additional_values = None
    if scale is None:
        scale = query.shape[-1] ** -0.5
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f'scale must be a float or None, got {scale!r}')
    if not isinstance(return_lse, bool):
        raise TypeError(f'return_lse must be a bool, got {return_lse!r}')
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p < 1:
        raise ValueError(f'dropout_p must be a float in [0, 1), got {dropout_p!r}')
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f'backend must be None or a backend name, got {backend!r}')
    name = resolve_backend(backend, query, key, value, spec, rpb, additional_keys, additional_values,
                           dropout=dropout_p > 0)
    if dropout_p > 0:
        if return_lse:
            raise ValueError('return_lse is not available with dropout_p > 0 (the dropped weights do not sum to 1)')
        with torch.autocast(query.device.type, enabled=False):  # the pattern math stays in the inputs' dtype
            return get_backend(name).forward_with_dropout(query, key, value, spec, float(scale), rpb,
                                                          additional_keys, additional_values, float(dropout_p))
    out, lse = torch.ops.attnzoo.na_forward(query, key, value, *spec_args(spec), float(scale), rpb,
                                            additional_keys, additional_values, name)
    return (out, lse) if return_lse else out


def na1d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
         dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False, scale: float | None = None,
         rpb: Tensor | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False, backend: str | None = None, valid_shape: Sequence[int] | None = None,
         dropout_p: float = 0.0) -> Tensor | tuple[Tensor, Tensor]:
    """1-D neighborhood attention on ``[batch, length, heads, head_dim]``; see :func:`na2d`."""
    return neighborhood_attention(1, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
                                  additional_keys, additional_values, return_lse, backend, valid_shape, dropout_p)


def na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
         dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False, scale: float | None = None,
         rpb: Tensor | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False, backend: str | None = None, valid_shape: Sequence[int] | None = None,
         dropout_p: float = 0.0) -> Tensor | tuple[Tensor, Tensor]:
    """2-D neighborhood attention on ``[batch, height, width, heads, head_dim]`` (NATTEN's layout and semantics).

    Args:
        kernel_size, stride, dilation, is_causal: int/bool or per-axis tuples (NATTEN's rules, ``ops._pattern``);
            kernel_size * dilation <= length and stride <= kernel_size on every axis.
        scale: logit scale, default ``head_dim ** -0.5``.
        rpb: relative position bias ``[heads, 2k-1, 2k-1]`` added to the logits (with its gradient).
        additional_keys / additional_values: ``[batch (or 1), n_extra, heads, head_dim]`` tokens every query also
            attends to, in the same softmax.
        return_lse: also return the log-sum-exp ``[batch, height, width, heads]`` (see :func:`merge_attentions`).
        backend: ``None`` (triton on CUDA, torch on CPU) or a name from ``ops.backends.backend_names()``; a named
            backend that cannot serve the call raises instead of falling back.
        valid_shape: per-axis count of real keys; keys at index >= valid_shape are masked (zero-padded blocks).
        dropout_p: dropout on the attention probabilities (training; ``torch`` backend, autograd path).
    """
    return neighborhood_attention(2, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
                                  additional_keys, additional_values, return_lse, backend, valid_shape, dropout_p)


def na3d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
         dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False, scale: float | None = None,
         rpb: Tensor | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False, backend: str | None = None, valid_shape: Sequence[int] | None = None,
         dropout_p: float = 0.0) -> Tensor | tuple[Tensor, Tensor]:
    """3-D neighborhood attention on ``[batch, depth, height, width, heads, head_dim]``; see :func:`na2d`."""
    return neighborhood_attention(3, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
                                  additional_keys, additional_values, return_lse, backend, valid_shape, dropout_p)


def merge_attentions(outputs: Sequence[Tensor], lses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Exactly merge attentions of one query set over disjoint key sets: ``(out, lse)`` of the union.

    ``outputs[i]`` is ``[..., D]`` and ``lses[i]`` the matching ``[...]`` log-sum-exp (``-inf`` where a part saw
    no key). Differentiable through outputs and lses.
    """
    if len(outputs) == 0 or len(outputs) != len(lses):
        raise ValueError(f'merge_attentions needs as many outputs as lses (at least one), got {len(outputs)} and '
                         f'{len(lses)}')
    for i, (o, lse) in enumerate(zip(outputs, lses)):
        if o.shape != outputs[0].shape or tuple(lse.shape) != tuple(o.shape[:-1]):
            raise ValueError(f'outputs[{i}] {tuple(o.shape)} / lses[{i}] {tuple(lse.shape)} do not match outputs[0] '
                             f'{tuple(outputs[0].shape)} (lse must be the output shape without its last dim)')
    dtype = torch.float64 if outputs[0].dtype == torch.float64 else torch.float32
    lse = torch.stack([x.to(dtype) for x in lses])
    # rows no part saw: keep -inf - -inf out of logsumexp's backward (it would send NaN into every gradient)
    finite = torch.isfinite(lse).any(0)
    total = torch.where(finite, torch.logsumexp(torch.where(finite, lse, 0), 0), float('-inf'))
    weights = torch.where(finite, torch.exp(lse - torch.where(finite, total, 0)), 0)
    out = sum(w[..., None] * o.to(dtype) for w, o in zip(weights, outputs))
    return out.to(outputs[0].dtype), total
