"""Whether Triton kernels can run here: the ``probe`` every op family's ``triton`` backend registers with.

Nothing here imports Triton (the version comes from package metadata); a missing or too-old Triton makes the
``triton`` backends unavailable with a reason (automatic dispatch then uses the next backend), never an import
error of ``ops``.
"""
from __future__ import annotations

import importlib.metadata
import os

import torch

__all__ = ['unavailable_reason', 'interpreting', 'MIN_VERSION']

# The kernels use tl.gather (Triton 3.2) and triton.knobs (3.4); setup.cfg declares the same floor.
MIN_VERSION = (3, 4)


def _library_reason() -> str | None:
    """Why the installed Triton cannot run our kernels (read from package metadata: no import of triton)."""
    try:
        version = importlib.metadata.version('triton')
    except importlib.metadata.PackageNotFoundError:
        return 'triton is not installed'
    parts = tuple(int(p) for p in version.split('+')[0].split('.')[:2] if p.isdigit())
    if parts < MIN_VERSION:
        return (f'triton {version} is too old for these kernels (they use tl.gather and triton.knobs: triton >= '
                f'{".".join(map(str, MIN_VERSION))})')
    return None


# evaluated once: the probe below runs on every dispatch, also inside torch.compile traces
_LIBRARY_REASON = _library_reason()


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return os.environ.get('TRITON_INTERPRET') == '1'


def unavailable_reason(device: torch.device) -> str | None:
    """Why Triton kernels cannot run on ``device`` here, or ``None``."""
    if _LIBRARY_REASON is not None:
        return _LIBRARY_REASON
    if device.type == 'cpu' and interpreting():
        return None
    if device.type != 'cuda' or not torch.cuda.is_available():
        return (f'it needs CUDA tensors (got {device.type}); use backend="torch" on CPU, or set TRITON_INTERPRET=1 '
                'before importing triton to run the kernels in the interpreter')
    return None
