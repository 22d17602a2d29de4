"""One backend registry for every op family, keyed by ``(op, backend)``, with declared capabilities.

A backend is a named object: each backend module ends with its :class:`Backend` record, which holds its entry
points by reference (so grep and a call-graph tool follow ``BACKEND.forward`` to the function) and what it can
do, and the op family's ``backends`` package registers it::

    # ops/na/backends/triton_na.py
    BACKEND = Backend('na', 'triton', forward, backward, check_inputs=check_inputs, devices=('cuda',), priority=20,
                      probe=_triton.unavailable_reason, ...)
    # ops/na/backends/__init__.py
    register_backend(triton_na.BACKEND)

and asks the registry which one runs a call (:func:`resolve_backend`), then calls the record's entry points
(``get_backend(op, name).forward(...)``). Nothing here knows a backend by name: what a backend can do is its
record — device types, dtypes, attention dropout, deterministic backward, a ``probe`` for run-time availability
(a library version, an interpreter mode), and its ``priority`` in automatic dispatch (the highest-priority
backend that can serve a call wins; ``auto=False`` keeps oracles such as ``reference`` out of automatic
dispatch). A backend may give ``check_inputs(...)`` (the op family decides its arguments) raising ``ValueError`` /
``TypeError`` for a request it cannot serve; automatic dispatch then moves on to the next backend, while a
backend named by the caller raises with the reason.

Lazy imports: registering a record imports its module, so a backend module must import cheaply everywhere. The
Triton backends keep ``import triton`` (slow, and failing where Triton is absent or too old) out of module
import: their kernels live in ``_triton_kernels`` / ``_triton_small`` modules that the host code imports on
first use, and at registration only where the ``probe`` says Triton can run (so no import happens inside a
``torch.compile`` trace). A CPU machine thus registers the ``triton`` backends (listed, refused with the
probe's reason) without importing Triton.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

__all__ = ['Backend', 'register_backend', 'get_backend', 'backend_names', 'available_backends', 'check_backend',
           'resolve_backend', 'op_names']

ALL_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Backend:
    """One implementation of an op: its entry points (functions of its module, by reference) and what it can do
    (declared here, checked on every call). The signatures of the entry points are the op family's (its
    ``backends`` package docstring)."""

    op: str
    name: str
    forward: Callable
    backward: Callable | None = None  # custom-op backends; None where the forward is differentiable by autograd
    forward_with_dropout: Callable | None = None  # differentiable forward with attention dropout, if it has one
    check_inputs: Callable | None = None  # raises ValueError / TypeError for a request it cannot serve
    extra: Mapping[str, Callable] = field(default_factory=dict, compare=False)  # op-specific entry points, hooks
    devices: tuple[str, ...] = ('*',)  # device types it runs on ('*' = any)
    dtypes: tuple[torch.dtype, ...] = ALL_FLOAT
    dropout: bool = False  # supports attention dropout (dropout_p > 0)
    deterministic: bool = True  # backward is deterministic, or becomes so under use_deterministic_algorithms
    priority: int = 0  # automatic dispatch tries higher priorities first
    auto: bool = True  # eligible for automatic dispatch (False: only when named, e.g. a float64 oracle)
    probe: Callable[[torch.device], str | None] | None = None  # reason it cannot run on a device now, or None

    def unavailable_reason(self, device: torch.device) -> str | None:
        """Why this backend cannot run on ``device`` at all (before looking at a call), or ``None``."""
        if self.probe is not None:
            reason = self.probe(device)
            if reason is not None:
                return reason
        elif '*' not in self.devices and device.type not in self.devices:
            return f'it runs on {"/".join(self.devices)} tensors, got a {device.type} tensor'
        return None


_REGISTRY: dict[tuple[str, str], Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Register ``backend`` under ``(backend.op, backend.name)`` (replacing any earlier record of that name)."""
    if not isinstance(backend, Backend):
        raise TypeError(f'register_backend takes a Backend record, got {type(backend).__name__}')
    _REGISTRY[backend.op, backend.name] = backend
    return backend


def op_names() -> list[str]:
    """The op families that have registered backends."""
    return sorted({op for op, _ in _REGISTRY})


def backend_names(op: str = 'na') -> list[str]:
    """Backends registered for ``op``, in automatic-dispatch order (highest priority first)."""
    entries = [e for (o, _), e in _REGISTRY.items() if o == op]
    if not entries:
        raise ValueError(f'unknown op {op!r}; ops with backends: {op_names()}')
    return [e.name for e in sorted(entries, key=lambda e: -e.priority)]


def get_backend(op: str, name: str) -> Backend:
    """The registered :class:`Backend` ``name`` of ``op`` (its entry points and capabilities)."""
    if (op, name) not in _REGISTRY:
        raise ValueError(f'backend must be None or one of {backend_names(op)} for {op!r}, got {name!r}')
    return _REGISTRY[op, name]


def available_backends(device: torch.device | str = 'cpu', op: str = 'na') -> list[str]:
    """Backends of ``op`` that can run on ``device`` now, in automatic-dispatch order."""
    device = torch.device(device)
    return [n for n in backend_names(op) if _REGISTRY[op, n].unavailable_reason(device) is None]


def _capability_reason(entry: Backend, device: torch.device, dtype: torch.dtype, dropout: bool) -> str | None:
    reason = entry.unavailable_reason(device)
    if reason is None and dtype not in entry.dtypes:
        names = [str(d).removeprefix('torch.') for d in entry.dtypes]
        reason = f'it supports dtypes {names}, got {dtype}'
    if reason is None and dropout and not entry.dropout:
        supported = [n for n in backend_names(entry.op) if _REGISTRY[entry.op, n].dropout]
        reason = f'it has no attention dropout (dropout_p > 0); backends with dropout: {supported}'
    if reason is None and not entry.deterministic and torch.are_deterministic_algorithms_enabled():
        reason = 'its backward is not deterministic and torch.use_deterministic_algorithms(True) is set'
    return reason


def _refusal(entry: Backend, device: torch.device, dtype: torch.dtype, dropout: bool,
             check_args: tuple) -> Exception | None:
    """The error saying why ``entry`` cannot serve this call, or None (not raised: automatic dispatch runs this
    for every candidate on every call)."""
    reason = _capability_reason(entry, device, dtype, dropout)
    if reason is not None:
        return RuntimeError(f'backend={entry.name!r} cannot serve this {entry.op} call: {reason}')
    if entry.check_inputs is not None:
        try:
            entry.check_inputs(*check_args)
        except (ValueError, TypeError, RuntimeError) as e:
            return type(e)(f'backend={entry.name!r} cannot serve this {entry.op} call: {e}')
    return None


def check_backend(op: str, name: str, device: torch.device, dtype: torch.dtype, dropout: bool = False,
                  check_args: tuple = ()) -> None:
    """Raise a clear error when backend ``name`` of ``op`` cannot serve this call.

    ``check_args`` go to the backend's ``check_inputs`` when it has one.
    """
    error = _refusal(get_backend(op, name), device, dtype, dropout, check_args)
    if error is not None:
        raise error from None


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def resolve_backend(op: str, name: str | None, device: torch.device, dtype: torch.dtype, dropout: bool = False,
                    check_args: tuple = ()) -> str:
    """The backend to run: ``name`` if given (validated, never replaced), else the highest-priority automatic
    backend that can serve the call."""
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f'backend must be None or a backend name, got {name!r}')
        check_backend(op, name, device, dtype, dropout, check_args)
        return name
    reasons, skipped_for_dropout = [], []
    for candidate in backend_names(op):
        entry = _REGISTRY[op, candidate]
        if not entry.auto:
            continue
        error = _refusal(entry, device, dtype, dropout, check_args)
        if error is not None:
            reasons.append(str(error))
            if dropout and not entry.dropout and _capability_reason(entry, device, dtype, False) is None:
                skipped_for_dropout.append(candidate)
            continue
        if skipped_for_dropout:
            _warn_once(f'{op}: attention dropout (dropout_p > 0) is not implemented by the {skipped_for_dropout} '
                       f'backend; these calls run on {candidate!r} instead, which is slower')
        return candidate
    raise RuntimeError(f'no {op} backend can serve this call on {device.type} ({dtype}):\n  ' + '\n  '.join(reasons))
