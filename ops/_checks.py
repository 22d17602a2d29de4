"""The checks and the dtype policy every op family shares, with one wording for their errors.

Dtype policy (as ``F.scaled_dot_product_attention``): outside autocast the floating inputs of one call must share
a dtype (an error names the arguments); under ``torch.autocast`` on the inputs' device every floating input
except float64 is cast to the autocast dtype and the op computes there (backends accumulate in fp32), so q after
a LayerNorm (fp32) meets a bf16 v without complaint. Gradients return in each input's own dtype (the casts are
differentiable). :func:`register_autocast` installs that rule on a custom op's Autocast dispatch keys, so it
also holds under ``torch.compile``; composite ops call :func:`autocast_inputs` themselves.
"""
from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ['check_tensor', 'check_compatible', 'check_scale', 'check_dropout', 'check_flag', 'autocast_dtype',
           'autocast_off', 'autocast_inputs', 'register_autocast', 'spatial_sizes', 'size_pair']

_AUTOCAST_KEYS = {'cpu': 'AutocastCPU', 'cuda': 'AutocastCUDA'}



def check_tensor(name: str, x, rank: int | None = None, layout: str = '') -> None:
    """``x`` is a non-empty floating-point tensor (of ``rank`` dims, described by ``layout``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    if rank is not None and x.dim() != rank:
        raise ValueError(f'{name} must be {layout} (rank {rank}), got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got {x.dtype}')
    if x.numel() == 0:
        raise ValueError(f'{name} must not be empty, got shape {tuple(x.shape)}')


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type``, or ``None`` outside autocast."""
    if device_type in _AUTOCAST_KEYS and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def autocast_off(device_type: str):
    """A context with autocast disabled on ``device_type``: a no-op context where it is off already (entering a
    ``torch.autocast`` costs ~4 us, paid on every eager op call) or on devices without autocast (meta)."""
    if device_type in _AUTOCAST_KEYS and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _castable(x: Tensor, device_type: str) -> bool:
    return x.is_floating_point() and x.device.type == device_type and x.dtype != torch.float64


def check_compatible(tensors: dict[str, Tensor | None]) -> None:
    """Present tensors share one device and, outside autocast, one dtype (the error names them all)."""
    present = {n: t for n, t in tensors.items() if t is not None}
    first = next(iter(present.values()))
    if any(t.device != first.device for t in present.values()):
        raise ValueError(f'{", ".join(present)} must be on one device, got '
                         f'{", ".join(f"{n}: {t.device}" for n, t in present.items())}')
    dtypes = {t.dtype for t in present.values()}
    if len(dtypes) == 1:
        return
    if autocast_dtype(first.device.type) is not None and all(_castable(t, first.device.type)
                                                              for t in present.values()):
        return  # autocast casts them all to its dtype
    got = ', '.join(f'{n}: {str(t.dtype).removeprefix("torch.")}' for n, t in present.items())
    raise TypeError(f'{", ".join(present)} must have one dtype outside autocast, got {got}')


def autocast_inputs(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Apply the autocast rule in a composite op: cast eligible floating inputs to the autocast dtype."""
    device = next(t.device.type for t in tensors if t is not None)
    dtype = autocast_dtype(device)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t is not None and _castable(t, device) else t for t in tensors)


def _cast_args(args, device_type: str, dtype: torch.dtype):
    out = []
    for a in args:
        if isinstance(a, Tensor) and _castable(a, device_type):
            a = a.to(dtype)
        elif isinstance(a, (list, tuple)) and any(isinstance(x, Tensor) for x in a):
            a = type(a)(_cast_args(a, device_type, dtype))
        out.append(a)
    return out


_LIBRARIES: list[torch.library.Library] = []  # registrations live as long as their Library object


def register_autocast(qualname: str) -> None:
    """Install the autocast rule on custom op ``qualname`` (``'ns::name'``) for CPU and CUDA.

    Unlike :func:`torch.library.register_autocast`, which casts to one fixed dtype, the kernel casts to the
    autocast dtype in force at the call (fp16 or bf16), as autocast's own lower-precision ops do.
    """
    namespace, name = qualname.split('::')
    overload = getattr(getattr(torch.ops, namespace), name).default
    library = torch.library.Library(namespace, 'FRAGMENT')
    _LIBRARIES.append(library)
    for device_type, key in _AUTOCAST_KEYS.items():
        def kernel(_keyset, *args, _device_type=device_type):
            dtype = torch.get_autocast_dtype(_device_type)
            with torch.autocast(_device_type, enabled=False):
                return overload(*_cast_args(args, _device_type, dtype))

        library.impl(name, kernel, key, with_keyset=True)


def check_scale(scale) -> None:
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise TypeError(f'scale must be a float or None, got {scale!r}')


def check_dropout(dropout_p) -> None:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real) or not 0 <= dropout_p < 1:
        raise ValueError(f'dropout_p must be a float in [0, 1), got {dropout_p!r}')


def check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be a bool, got {value!r}')


def spatial_sizes(x: Tensor, dims: Sequence[int]) -> tuple:
    """Sizes of ``dims``: Python ints, except symbolic sizes under ``torch.compile(dynamic=True)`` stay symbolic
    (``int()`` would specialise the graph to this resolution); constants under ``torch.jit.trace`` (fvcore)."""
    return tuple(n if isinstance(n, torch.SymInt) else int(n) for n in (x.shape[d] for d in dims))


def size_pair(value, name: str) -> tuple[int, int]:
    """``value`` (an int >= 1, or two of them: height, width) as a ``(height, width)`` pair of Python ints; one check
    and one error wording for every 2-d size argument (kernel sizes, strides, region counts, token grids)."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in pair):
        raise ValueError(f'{name} must be an int >= 1 or two of them (height, width), got {value!r}')
    return int(pair[0]), int(pair[1])
