"""Backend registry: every implementation of the neighborhood-attention contract, by name.

A backend is a module with two functions (``spec`` is an :class:`ops._pattern.NASpec`; tensors are
``[B, *S, H, D]``; ``add_k`` / ``add_v`` are ``[B or 1, n_extra, H, D]`` or ``None``)::

    forward(q, k, v, spec, scale, rpb, add_k, add_v) -> (out [B, *S, H, D] in q.dtype, lse [B, *S, H])
    backward(grad_out, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse=None)
        -> (dq, dk, dv, drpb, dadd_k, dadd_v)          # None for absent inputs

``lse`` is float32 (float64 for float64 inputs); a query that sees no key gets output 0 and lse ``-inf``.
``grad_lse`` (``[B, *S, H]`` or ``None``) is the gradient reaching ``lse`` (e.g. through
:func:`ops.merge_attentions`); it enters FlashAttention's backward as ``delta = rowsum(dO * O) - grad_lse``.
A backend may also define ``check_inputs(q, k, v, spec, rpb, add_k, add_v)`` raising a clear error for a
request it cannot serve (head_dim, dtype, device, ...).

Adding a backend: write ``ops/backends/<name>.py`` with that contract, add one :func:`register_backend` line
below, and run the conformance tests (``tests/_na_cases.py``) against it.

Routing (BiFormer-style): a routed pattern is, per query tile, an index list of key tiles (tokens permuted so a
region is one tile). The tiled backends already loop over a per-query-tile list of key tiles (``torch``: the
``k_flat`` rows of its plan; ``triton``: the key-tile loop of its kernels), so routing supplies that list
from data instead of the window rule, with the same masks, bias and softmax.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType

import torch

__all__ = ['register_backend', 'get_backend', 'backend_names', 'available_backends', 'resolve_backend',
           'check_backend']

_HAS_TRITON = importlib.util.find_spec('triton') is not None


@dataclass(frozen=True)
class _Entry:
    module: str  # import path, imported on first use
    devices: tuple[str, ...]  # device types it runs on ('*' = any)
    dtypes: tuple[torch.dtype, ...]
    dropout: bool  # supports attention dropout (attn_drop > 0 in training)


_REGISTRY: dict[str, _Entry] = {}
_MODULES: dict[str, ModuleType] = {}


def register_backend(name: str, module: str, devices: tuple[str, ...] = ('*',),
                     dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64),
                     dropout: bool = False) -> None:
    """Register backend ``name`` implemented by module path ``module`` (see the module docstring)."""
    _REGISTRY[name] = _Entry(module, devices, dtypes, dropout)


register_backend('reference', 'ops.backends.reference')
register_backend('torch', 'ops.backends.torch_na', dropout=True)
register_backend('triton', 'ops.backends.triton_na', devices=('cuda',),
                 dtypes=(torch.float16, torch.bfloat16, torch.float32))


# Import what can run here now, so that no import happens inside a torch.compile trace.
for _name in ('reference', 'torch'):
    _MODULES[_name] = importlib.import_module(_REGISTRY[_name].module)
if _HAS_TRITON and (torch.cuda.is_available() or os.environ.get('TRITON_INTERPRET') == '1'):
    _MODULES['triton'] = importlib.import_module(_REGISTRY['triton'].module)


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> ModuleType:
    """The module implementing backend ``name`` (imported lazily)."""
    if name not in _REGISTRY:
        raise ValueError(f'unknown backend {name!r}; registered: {backend_names()}')
    mod = _MODULES.get(name)
    if mod is None:
        mod = _MODULES[name] = importlib.import_module(_REGISTRY[name].module)
    return mod


def _device_reason(name: str, device: torch.device) -> str | None:
    entry = _REGISTRY[name]
    if name == 'triton':
        if not _HAS_TRITON:
            return 'triton is not installed'
        if device.type == 'cpu' and os.environ.get('TRITON_INTERPRET') == '1':
            return None
        if device.type != 'cuda' or not torch.cuda.is_available():
            return (f'it needs CUDA tensors (got {device.type}); use backend="torch" on CPU, or set '
                    'TRITON_INTERPRET=1 before importing triton to run the kernels in the interpreter')
        return None
    if '*' not in entry.devices and device.type not in entry.devices:
        return f'it runs on {entry.devices}, got a {device.type} tensor'
    return None


def available_backends(device: torch.device | str = 'cpu') -> list[str]:
    """Names of the backends that can run on ``device``."""
    device = torch.device(device)
    return [n for n in _REGISTRY if _device_reason(n, device) is None]


def check_backend(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec, rpb=None, add_k=None,
                  add_v=None, dropout: bool = False) -> None:
    """Raise a clear error when backend ``name`` cannot serve this request."""
    if name not in _REGISTRY:
        raise ValueError(f'backend must be None or one of {backend_names()}, got {name!r}')
    entry = _REGISTRY[name]
    reason = _device_reason(name, q.device)
    if reason is None and q.dtype not in entry.dtypes:
        reason = f'it supports dtypes {[str(d) for d in entry.dtypes]}, got {q.dtype}'
    if reason is None and dropout and not entry.dropout:
        supported = [n for n, e in _REGISTRY.items() if e.dropout]
        reason = f'it has no attention dropout (attn_drop > 0 in training); backends with dropout: {supported}'
    if reason is not None:
        raise RuntimeError(f'backend={name!r} cannot serve this call: {reason}')
    check = getattr(get_backend(name), 'check_inputs', None)
    if check is not None:
        try:
            check(q, k, v, spec, rpb, add_k, add_v)
        except (ValueError, TypeError, RuntimeError) as e:
            raise type(e)(f'backend={name!r} cannot serve this call: {e}') from None


def resolve_backend(name: str | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec, rpb=None,
                    add_k=None, add_v=None, dropout: bool = False) -> str:
    """The backend to run: ``name`` if given (validated, never replaced), else triton on CUDA when it can serve
    the request, otherwise torch."""
    if name is not None:
        check_backend(name, q, k, v, spec, rpb, add_k, add_v, dropout)
        return name
    if q.device.type == 'cuda' and _HAS_TRITON and not dropout:
        try:
            check_backend('triton', q, k, v, spec, rpb, add_k, add_v)
            return 'triton'
        except (ValueError, TypeError, RuntimeError):
            pass
    check_backend('torch', q, k, v, spec, rpb, add_k, add_v, dropout)
    return 'torch'
