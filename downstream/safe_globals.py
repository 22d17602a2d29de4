"""Let OpenMMLab's own entry points load mmengine checkpoints under torch's ``weights_only`` default.

torch >= 2.6 loads with ``weights_only=True`` unless told otherwise, and mmengine 0.10.7 calls ``torch.load`` without
the argument, so mmdet's / mmseg's own ``tools/test.py``, ``tools/train.py --resume``, ``load_from`` and ``mim
train/test`` fail on the checkpoints mmengine itself wrote ("Unsupported global: ...HistoryBuffer"). Importing
:mod:`downstream` (the zoo configs' ``custom_imports``) calls :func:`allow_mmengine_checkpoints`, which adds to torch's
allow-list exactly the globals those checkpoints hold beyond torch's own defaults:

* ``mmengine.logging.HistoryBuffer`` (the message hub's logged scalars) and ``builtins.getattr`` restricted to
  HistoryBuffer's public methods (its statistics methods are pickled as ``getattr(HistoryBuffer, name)``);
* numpy's array and scalar reconstruction (``ndarray``, ``dtype``, ``multiarray._reconstruct`` / ``scalar``, under
  numpy 2's ``numpy._core`` and numpy 1's ``numpy.core`` names: HistoryBuffer keeps numpy arrays) and the dtype
  classes of the numeric types a logged scalar takes (numpy >= 1.25 pickles a dtype's class, ``numpy.dtypes.*``).

Nothing else: the loader stays torch's safe unpickler, so a checkpoint that asks for any other global still fails.
"""
from typing import Any

import numpy as np
import torch

from .checkpoint import _history_buffer_getattr

_SCALAR_TYPES = (np.bool_, np.int32, np.int64, np.float16, np.float32, np.float64)


def mmengine_checkpoint_globals() -> list[Any]:
    """The allow-list entries (objects, or ``(object, 'module.name')`` for a second pickled name)."""
    from mmengine.logging import HistoryBuffer

    found: list[Any] = [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'), np.ndarray, np.dtype]
    found += [type(np.dtype(t)) for t in _SCALAR_TYPES if type(np.dtype(t)) is not np.dtype]
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    for name in ('_reconstruct', 'scalar'):
        obj = getattr(multiarray, name)
        found.append(obj)
        for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
            if module != obj.__module__:
                found.append((obj, f'{module}.{name}'))
    return found


def allow_mmengine_checkpoints() -> None:
    """Add :func:`mmengine_checkpoint_globals` to torch's global allow-list (once; later calls change nothing)."""
    present = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([g for g in mmengine_checkpoint_globals() if g not in present])
