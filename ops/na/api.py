"""Public functional API of neighborhood attention: ``na1d`` / ``na2d`` / ``na3d`` (NATTEN-compatible).

Every argument is validated here, once, with errors that name it (shared wording: :mod:`ops._checks`); the call
then runs as the custom op ``attnzoo::na_forward`` on the backend :func:`ops._registry.resolve_backend` picks
(plain eager calls run the same backend functions without the op's dispatch: :func:`.custom_op.eager_ok`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import (
    autocast_dtype,
    autocast_inputs,
    autocast_off,
    check_compatible,
    check_dropout,
    check_flag,
    check_scale,
    check_tensor,
    spatial_sizes,
)
from .._registry import get_backend, resolve_backend
from ..maps import _recorder
from . import backends as _backends  # noqa: F401  (registers the backends)
from . import custom_op
from . import maps as _maps
from .custom_op import _PLAIN, spec_args
from .pattern import BoolOrTuple, IntOrTuple, NASpec, make_spec

__all__ = ['na1d', 'na2d', 'na3d', 'neighborhood_attention']


def _layout(ndim: int) -> str:
    return f'[batch, *spatial ({ndim} dims), heads, head_dim]'


def _validate(ndim: int, query, key, value, rpb, spec: NASpec, additional_keys, additional_values):
    for name, x in (('key', key), ('value', value)):
        check_tensor(name, x, ndim + 3, _layout(ndim))
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(f'query, key and value must have the same shape, got {tuple(query.shape)}, '
                         f'{tuple(key.shape)}, {tuple(value.shape)}')
    heads, head_dim = query.shape[-2], query.shape[-1]
    if rpb is not None:
        if not isinstance(rpb, Tensor) or not rpb.is_floating_point():
            raise TypeError(f'rpb must be a floating-point torch.Tensor or None, got {getattr(rpb, "dtype", rpb)!r}')
        want = (heads, *(2 * k - 1 for k in spec.kernel_size))
        if tuple(rpb.shape) != want:
            raise ValueError(f'rpb must have shape {want} = (heads, 2 * kernel_size - 1 per axis), got '
                             f'{tuple(rpb.shape)}')
    if (additional_keys is None) != (additional_values is None):
        raise ValueError('additional_keys and additional_values must be given together')
    if additional_keys is not None:
        for name, x in (('additional_keys', additional_keys), ('additional_values', additional_values)):
            if not isinstance(x, Tensor) or not x.is_floating_point():
                raise TypeError(f'{name} must be a floating-point torch.Tensor, got {getattr(x, "dtype", x)!r}')
            if x.dim() != 4 or x.shape[0] not in (1, query.shape[0]) or tuple(x.shape[2:]) != (heads, head_dim):
                raise ValueError(f'{name} must be [batch (or 1), n_extra, heads={heads}, head_dim={head_dim}], '
                                 f'got {tuple(x.shape)}')
        if additional_keys.shape != additional_values.shape:
            raise ValueError(f'additional_keys and additional_values must have the same shape, got '
                             f'{tuple(additional_keys.shape)} and {tuple(additional_values.shape)}')
    check_compatible({'query': query, 'key': key, 'value': value, 'rpb': rpb, 'additional_keys': additional_keys,
                      'additional_values': additional_values})


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
        border: str = 'clamp',
        token_grid=None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Generalized neighborhood attention over an ``ndim``-D token grid; see :func:`na2d`.

    ``token_grid`` (an :class:`ops.TokenGrid`: the real map and the grid's origin on it, for padded grids) is read
    only while attention maps are recorded (:func:`ops.record_attention`); default: the grid is the map.
    """
    tensors = (query, key, value, rpb, additional_keys, additional_values)
    call = _call_key(ndim, tensors, kernel_size, stride, dilation, is_causal, scale, return_lse, backend,
                     valid_shape, dropout_p, border)
    spec = _CHECKED.get(call) if call is not None else None
    if spec is None:
        spec = _check(ndim, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb, additional_keys,
                      additional_values, return_lse, valid_shape, dropout_p, border)
        if call is not None:
            if len(_CHECKED) >= _CHECKED_SIZE:
                _CHECKED.clear()
            _CHECKED[call] = spec
    if additional_keys is not None and additional_keys.shape[1] == 0:
        additional_keys = additional_values = None
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    dropout = dropout_p > 0
    # the autocast rule (also registered on the custom op's Autocast keys); here too so that backends are checked
    # on the dtypes they will see, and so that it covers the autograd dropout path, which is not a custom op
    if autocast_dtype(query.device.type) is not None:
        query, key, value, rpb, additional_keys, additional_values = autocast_inputs(
            query, key, value, rpb, additional_keys, additional_values)
    name = resolve_backend('na', backend, query.device, query.dtype, dropout,
                           (query, key, value, spec, rpb, additional_keys, additional_values))
    if _recorder.active is not None:
        _maps.record(query, key, spec, scale, rpb, additional_keys, token_grid)
    if dropout:
        impl = get_backend('na', name)
        if impl.forward_with_dropout is not None:
            with autocast_off(query.device.type):
                return impl.forward_with_dropout(query, key, value, spec, scale, rpb, additional_keys,
                                                 additional_values, float(dropout_p))
    if not dropout and custom_op.eager_ok(query, key, value, rpb, additional_keys, additional_values):
        out, lse = custom_op.na_eager(query, key, value, spec, scale, rpb, additional_keys, additional_values, name)
    else:
        # fused dropout: the Philox (seed, offset) comes from torch's CPU generator, so torch.manual_seed reproduces it
        seed = torch.randint(0, 2 ** 31 - 1, (2,), dtype=torch.int64) if dropout else None
        out, lse = torch.ops.attnzoo.na_forward(query, key, value, *spec_args(spec), scale, rpb, additional_keys,
                                                additional_values, name, float(dropout_p), seed, border=spec.border)
    if return_lse and _recorder.active is not None:
        _recorder.active.bind_lse(lse)
    return (out, lse) if return_lse else out


def _check(ndim, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb, additional_keys,
           additional_values, return_lse, valid_shape, dropout_p, border) -> NASpec:
    """Every argument check of a call (errors naming the argument); the call's :class:`NASpec`."""
    if ndim not in (1, 2, 3):
        raise ValueError(f'ndim must be 1, 2 or 3, got {ndim!r}')
    check_tensor('query', query, ndim + 3, _layout(ndim))
    spec = make_spec(spatial_sizes(query, range(1, ndim + 1)), kernel_size, stride, dilation, is_causal,
                     valid_shape, border)
    _validate(ndim, query, key, value, rpb, spec, additional_keys, additional_values)
    check_scale(scale)
    check_flag('return_lse', return_lse)
    check_dropout(dropout_p)
    if dropout_p > 0 and return_lse:
        raise ValueError('return_lse is not available with dropout_p > 0 (the dropped weights do not sum to 1)')
    return spec


# Calls that passed every check, keyed by all that the checks read (the arguments' exact types and values, the
# tensors' shapes, dtypes and devices, the autocast state), with their NASpec: a repeated call (each layer of a
# model, each step) skips the checks and make_spec (~20 us of Python a call). Only plain types of which no two
# values that the checks tell apart compare equal enter a key (not True == 1 or 3.0 == 3: ints, bools, floats, str,
# None, tuples of ints / bools, plain tensors with concrete sizes); any other call is checked every time.
_CHECKED: dict[tuple, NASpec] = {}
_CHECKED_SIZE = 512


def _ints(x) -> bool:
    return type(x) is int or type(x) is tuple and all(type(i) is int for i in x)


def _bools(x) -> bool:
    return type(x) is bool or type(x) is tuple and all(type(i) is bool for i in x)


def _call_key(ndim, tensors, kernel_size, stride, dilation, is_causal, scale, return_lse, backend, valid_shape,
              dropout_p, border) -> tuple | None:
    """The :data:`_CHECKED` key of a call, or None when its arguments are not all of plain types."""
    if not (type(ndim) is int and _ints(kernel_size) and _ints(stride) and _ints(dilation) and _bools(is_causal)
            and (scale is None or type(scale) is float or type(scale) is int) and type(return_lse) is bool
            and (backend is None or type(backend) is str) and (valid_shape is None or type(valid_shape) is tuple
                                                               and _ints(valid_shape))
            and (type(dropout_p) is float or type(dropout_p) is int) and type(border) is str):
        return None
    if torch.compiler.is_compiling() or any(t is not None and type(t) not in _PLAIN for t in tensors):
        return None  # symbolic sizes, fake and subclass tensors
    query = tensors[0]
    return (ndim, kernel_size, stride, dilation, is_causal, return_lse, backend, valid_shape, dropout_p, border,
            autocast_dtype(query.device.type),
            *(None if t is None else (t.shape, t.dtype, t.device) for t in tensors))


def na1d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
         dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False, scale: float | None = None,
         rpb: Tensor | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False, backend: str | None = None, valid_shape: Sequence[int] | None = None,
         dropout_p: float = 0.0, border: str = 'clamp') -> Tensor | tuple[Tensor, Tensor]:
    """1-D neighborhood attention on ``[batch, length, heads, head_dim]``; see :func:`na2d`."""
    return neighborhood_attention(1, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
                                  additional_keys, additional_values, return_lse, backend, valid_shape, dropout_p,
                                  border)


def na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
         dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False, scale: float | None = None,
         rpb: Tensor | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False, backend: str | None = None, valid_shape: Sequence[int] | None = None,
         dropout_p: float = 0.0, border: str = 'clamp') -> Tensor | tuple[Tensor, Tensor]:
    """2-D neighborhood attention on ``[batch, height, width, heads, head_dim]`` (NATTEN's layout and semantics).

    Args:
        kernel_size, stride, dilation, is_causal: int/bool or per-axis tuples (NATTEN's rules, ``ops.na.pattern``);
            kernel_size * dilation <= length and stride <= kernel_size on every axis.
        scale: logit scale, default ``head_dim ** -0.5``.
        rpb: relative position bias ``[heads, 2k-1, 2k-1]`` added to the logits (with its gradient).
        additional_keys / additional_values: ``[batch (or 1), n_extra, heads, head_dim]`` tokens every query also
            attends to, in the same softmax.
        return_lse: also return the log-sum-exp ``[batch, height, width, heads]`` (see :func:`merge_attentions`).
        backend: ``None`` (the highest-priority backend that can serve the call: triton on CUDA, torch on CPU) or
            a name from ``ops.backend_names('na')``; a named backend that cannot serve the call raises instead of
            falling back.
        valid_shape: per-axis count of real keys; keys at index >= valid_shape are masked (zero-padded blocks).
        dropout_p: dropout on the attention probabilities (training; backends that declare dropout).
        border: ``'clamp'`` (NATTEN: border windows shifted inwards, every query sees ``kernel_size`` keys) or
            ``'mask'`` (centred windows, zero-padded and masked: border queries see fewer keys; TransNeXt).

    Under ``torch.autocast`` the floating inputs are cast to the autocast dtype (as SDPA does); outside it they must
    share one dtype.
    """
    return neighborhood_attention(2, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
                                  additional_keys, additional_values, return_lse, backend, valid_shape, dropout_p,
                                  border)


def na3d(query: Tensor, key: Tensor, value: Tensor, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
         dilation: IntOrTuple = 1, is_causal: BoolOrTuple = False, scale: float | None = None,
         rpb: Tensor | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False, backend: str | None = None, valid_shape: Sequence[int] | None = None,
         dropout_p: float = 0.0, border: str = 'clamp') -> Tensor | tuple[Tensor, Tensor]:
    """3-D neighborhood attention on ``[batch, depth, height, width, heads, head_dim]``; see :func:`na2d`."""
    return neighborhood_attention(3, query, key, value, kernel_size, stride, dilation, is_causal, scale, rpb,
                                  additional_keys, additional_values, return_lse, backend, valid_shape, dropout_p,
                                  border)
