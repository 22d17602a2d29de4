"""Public functional API of dense cross-attention: :func:`dense_attention`.

Every argument is validated here, once, with errors that name it (shared wording: :mod:`ops._checks`); the call
then runs on the backend :func:`ops._registry.resolve_backend` picks, as plain differentiable torch code.
"""
from __future__ import annotations

from torch import Tensor

from .._checks import (
    autocast_inputs,
    autocast_off,
    check_compatible,
    check_dropout,
    check_flag,
    check_scale,
    check_tensor,
)
from .._registry import get_backend, resolve_backend
from ..maps import _recorder
from . import backends as _backends  # noqa: F401  (registers the backends)
from . import maps as _maps

__all__ = ['dense_attention']


def _validate(query, key, value, bias) -> None:
    check_tensor('query', query, 4, '[batch, queries, heads, head_dim]')
    check_tensor('key', key, 4, '[batch, keys, heads, head_dim]')
    check_tensor('value', value, 4, '[batch, keys, heads, value_dim]')
    b, n, h, d = query.shape
    if key.shape[0] != b or key.shape[2] != h or key.shape[3] != d:
        raise ValueError(f'key must be [batch={b}, keys, heads={h}, head_dim={d}] to match query '
                         f'{tuple(query.shape)}, got {tuple(key.shape)}')
    m = key.shape[1]
    if value.shape[0] != b or value.shape[1] != m or value.shape[2] != h:
        raise ValueError(f'value must be [batch={b}, keys={m}, heads={h}, value_dim] to match query '
                         f'{tuple(query.shape)} and key {tuple(key.shape)}, got {tuple(value.shape)}')
    if bias is not None:
        if not isinstance(bias, Tensor) or not bias.is_floating_point():
            raise TypeError(f'bias must be a floating-point torch.Tensor or None, got {getattr(bias, "dtype", bias)!r}')
        target = (b, h, n, m)
        if bias.dim() > 4 or any(s != 1 and s != t for s, t in zip(reversed(bias.shape), reversed(target))):
            raise ValueError(f'bias must be broadcastable to [batch, heads, queries, keys] = {target}, got '
                             f'{tuple(bias.shape)}')
    check_compatible({'query': query, 'key': key, 'value': value, 'bias': bias})


def dense_attention(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None = None,
                    scale: float | None = None, return_lse: bool = False, dropout_p: float = 0.0,
                    backend: str | None = None, token_grid=None) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of N queries over M keys (any M, typically M << N): ``softmax(q k^T * scale + bias) v``.

    Args:
        query: ``[batch, N, heads, head_dim]`` (the layout of every op in :mod:`ops`).
        key: ``[batch, M, heads, head_dim]``; value: ``[batch, M, heads, value_dim]``.
        bias: additive logit bias broadcastable to ``[batch, heads, N, M]`` (e.g. ``[heads, N, M]`` or ``[N, M]``),
            with its gradient; ``-inf`` masks a key (a query whose keys are all masked gets output 0, lse ``-inf``).
        scale: logit scale, default ``head_dim ** -0.5``.
        return_lse: also return the log-sum-exp ``[batch, N, heads]`` (float32; float64 for float64 inputs), so the
            result merges exactly with another attention over the same queries (:func:`ops.merge_attentions`).
        dropout_p: dropout on the attention probabilities (applied whenever > 0, as in SDPA); not with return_lse.
        backend: ``None`` (``'sdpa'``) or a name from ``ops.backend_names('dense')`` (``'reference'``: the float64
            oracle); a named backend that cannot serve the call raises.
        token_grid: where the query and key tokens lie (``(H, W)`` or an :class:`ops.TokenGrid` for both, a pair
            for different grids, or the name of a token set such as ``'agents'``), read only while attention maps
            are recorded (:func:`ops.record_attention`).

    Returns ``out [batch, N, heads, value_dim]``, and ``lse`` with ``return_lse``. Under ``torch.autocast`` the
    floating inputs (bias included) are cast to the autocast dtype, as SDPA does; outside it they must share one
    dtype. Gradients return in each input's dtype.
    """
    _validate(query, key, value, bias)
    check_scale(scale)
    scale = float(query.shape[-1]) ** -0.5 if scale is None else float(scale)
    check_flag('return_lse', return_lse)
    check_dropout(dropout_p)
    dropout = dropout_p > 0
    if dropout and return_lse:
        raise ValueError('return_lse is not available with dropout_p > 0 (the dropped weights do not sum to 1)')
    query, key, value, bias = autocast_inputs(query, key, value, bias)
    name = resolve_backend('dense', backend, query.device, query.dtype, dropout)
    impl = get_backend('dense', name)
    with autocast_off(query.device.type):  # inputs are cast; backends pick their accumulation
        if dropout:
            out, lse = impl.forward_with_dropout(query, key, value, bias, scale, float(dropout_p)), None
        else:
            out, lse = impl.forward(query, key, value, bias, scale, return_lse)
    if _recorder.active is not None:
        _maps.record(query, key, bias, scale, token_grid, lse)
    return (out, lse) if return_lse else out
