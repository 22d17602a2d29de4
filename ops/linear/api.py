"""Public functional API of linear attention: :func:`linear_attention`, and the 2-D RoPE tables RALA rotates with.

Every argument is validated here, once, with errors that name it (shared wording: :mod:`ops._checks`); the call
then runs on the backend :func:`ops._registry.resolve_backend` picks.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from .._checks import autocast_inputs, autocast_off, check_compatible, check_flag, check_tensor
from .._registry import get_backend, resolve_backend
from ..maps import _recorder
from . import backends as _backends  # noqa: F401  (registers the backends)
from . import maps as _maps
from .backends._common import rotate

__all__ = ['linear_attention', 'rope_2d', 'apply_rope']

FEATURE_MAPS = ('elu+1', 'relu', 'identity', 'leakyrelu', 'exp')
NORMALIZERS = ('divide', 'inline')


def rope_2d(angle: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """RALA's 2-D RoPE tables ``(sin, cos)``, each ``[height * width, 2 * len(angle)]``: the first half of the
    channels rotates by the row index, the second by the column index (``angle`` is the stage's ``RoPE.angle``)."""
    rows = torch.arange(height, device=angle.device, dtype=angle.dtype)[:, None] * angle
    cols = torch.arange(width, device=angle.device, dtype=angle.dtype)[:, None] * angle
    phase = torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], -1).flatten(0, 1)
    return phase.sin(), phase.cos()


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x [B, N, H, D]`` by the ``[N, D]`` tables of :func:`rope_2d` (pairs (2i, 2i+1), RALA's order)."""
    return rotate(x, sin, cos)


def _validate(query, key, value, rope, scale) -> None:
    check_tensor('query', query, 4, '[batch, tokens, heads, head_dim]')
    check_tensor('key', key, 4, '[batch, tokens, heads, head_dim]')
    check_tensor('value', value, 4, '[batch, tokens, heads, value_dim]')
    if key.shape != query.shape:
        raise ValueError(f'key must have the shape of query {tuple(query.shape)}, got {tuple(key.shape)}')
    b, n, h, d = query.shape
    if value.shape[:3] != (b, n, h):
        raise ValueError(f'value must be [batch={b}, tokens={n}, heads={h}, value_dim], got {tuple(value.shape)}')
    tensors = {'query': query, 'key': key, 'value': value}
    if rope is not None:
        if not isinstance(rope, (tuple, list)) or len(rope) != 2:
            raise TypeError(f'rope must be a (sin, cos) pair of tensors or None, got {type(rope).__name__}')
        for name, t in zip(('rope sin', 'rope cos'), rope):
            check_tensor(name, t, 2, '[tokens, head_dim]')
            if tuple(t.shape) != (n, d):
                raise ValueError(f'{name} must be [tokens={n}, head_dim={d}], got {tuple(t.shape)}')
        if d % 2:
            raise ValueError(f'rope needs an even head_dim, got {d}')
    if isinstance(scale, Tensor):
        check_tensor('scale', scale)
        if scale.numel() != h:
            raise ValueError(f'scale must be a float or a tensor of heads={h} elements, got {tuple(scale.shape)}')
        tensors['scale'] = scale
    elif isinstance(scale, bool) or not isinstance(scale, (numbers.Real, torch.SymFloat)):  # SymFloat: 1 / N of a
        # symbolic token count (torch.export with dynamic sizes)
        raise TypeError(f'scale must be a float or a per-head tensor, got {scale!r}')
    check_compatible(tensors)


def linear_attention(query: Tensor, key: Tensor, value: Tensor, *, feature_map: str = 'elu+1',
                     key_reweight: bool = False, rope: tuple[Tensor, Tensor] | None = None,
                     key_reduce: str = 'sum', eps: float = 0.0, clamp_min: float | None = None,
                     scale: float | Tensor = 1.0, normalizer: str = 'divide', backend: str | None = None,
                     token_grid=None) -> Tensor:
    """Kernelised linear attention ``scale * rope(q') (rope(k')^T v) / max(q' . reduce(k') + eps, clamp_min)``.

    With ``q' = phi(query)``, ``k' = phi(key)`` (times RALA's re-weighting ``softmax_N(D^-0.5 mean(q') . k') * N``
    when ``key_reweight``). RoPE rotates the numerator only; the normaliser uses the un-rotated features.

    * RALA (RAVLT): ``feature_map='elu+1', key_reweight=True, rope=(sin, cos), key_reduce='mean', eps=1e-6,
      scale=1 / N`` (its ``N^-0.5`` on both sides of the state).
    * L2ViT: ``feature_map='relu', key_reduce='sum', clamp_min=100.0, scale=temperature`` (per head).
    * InLine: ``normalizer='inline', feature_map='identity', scale=head_dim ** -0.5``: no normaliser; instead the
      injective correction ``out = (scale / N) q' (k'^T v) + (1 - scale * q' . mean(k')) mean(v)``, i.e. the weights
      ``1/N + scale/N * q'_i . (k'_j - mean(k'))`` that sum to 1 per query (the official ``InLineAttention``, which
      folds ``(scale / N) ** 0.5`` into k and v). Takes no re-weighting, RoPE, key_reduce, eps or clamp_min;
      ``scale`` is a float.

    Args:
        query, key: ``[batch, N, heads, head_dim]``; value: ``[batch, N, heads, value_dim]``.
        feature_map: ``'elu+1'``, ``'relu'``, ``'identity'``, ``'leakyrelu'`` (slope 0.01) or ``'exp'``
            (``exp(0.2 x)``, InLine's ``exp_kernel``).
        rope: ``(sin, cos)`` ``[N, head_dim]`` tables (:func:`rope_2d`) or ``None``.
        key_reduce: ``'sum'`` or ``'mean'`` of the keys in the normaliser.
        eps, clamp_min: added to, then the lower clamp of, the normaliser (``None``: no clamp).
        scale: a float or a ``[heads]`` tensor (with its gradient) multiplying the output; with
            ``normalizer='inline'`` the float kernel scale above.
        normalizer: ``'divide'`` (the normaliser above) or ``'inline'`` (InLine's injective correction).
        backend: ``None`` (``'torch'``) or a name from ``ops.backend_names('linear')`` (``'reference'``: the
            float64 oracle).
        token_grid: where the N tokens lie on the map (``(H, W)`` or an :class:`ops.TokenGrid`), read only while
            attention maps are recorded (:func:`ops.record_attention`; the implied weights: ``ops.linear.maps``).

    Returns ``[batch, N, heads, value_dim]`` in the (autocast) input dtype; the state, the normaliser and the
    re-weighting are computed in float32 (float64 for float64) under autocast too.
    """
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f'feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}')
    check_flag('key_reweight', key_reweight)
    if key_reduce not in ('sum', 'mean'):
        raise ValueError(f"key_reduce must be 'sum' or 'mean', got {key_reduce!r}")
    for name, val in (('eps', eps), ('clamp_min', clamp_min)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, numbers.Real) or val < 0):
            raise ValueError(f'{name} must be a non-negative float' + (' or None' if name == 'clamp_min' else '')
                             + f', got {val!r}')
    if normalizer not in NORMALIZERS:
        raise ValueError(f'normalizer must be one of {NORMALIZERS}, got {normalizer!r}')
    if normalizer == 'inline':
        extras = dict(key_reweight=(key_reweight, False), rope=(rope, None), key_reduce=(key_reduce, 'sum'),
                      eps=(eps, 0.0), clamp_min=(clamp_min, None))
        given = [n for n, (val, default) in extras.items() if val != default]
        if given:
            raise ValueError(f"normalizer='inline' takes no {', '.join(given)}")
        if isinstance(scale, Tensor) or isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"normalizer='inline' needs a float scale, got {scale!r}")
    _validate(query, key, value, rope, scale)
    sin, cos = rope if rope is not None else (None, None)
    query, key, value = autocast_inputs(query, key, value)
    name = resolve_backend('linear', backend, query.device, query.dtype)
    impl = get_backend('linear', name)
    clamp_min = None if clamp_min is None else float(clamp_min)
    if _recorder.active is not None:
        _maps.record(query, key, feature_map, key_reweight, sin, cos, key_reduce, float(eps), clamp_min,
                     float(scale) if normalizer == 'inline' else scale, normalizer, token_grid)
    with autocast_off(query.device.type):  # inputs are cast; the backends accumulate in fp32
        if normalizer == 'inline':
            return impl.extra['forward_inline'](query, key, value, feature_map, float(scale))
        return impl.forward(query, key, value, feature_map, key_reweight, sin, cos, key_reduce, float(eps),
                            clamp_min, scale)
