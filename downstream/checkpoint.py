"""Checkpoint reading for the downstream integration.

Two problems live here:

* torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load`` without the
  argument, so loading or resuming an mmengine checkpoint (its ``meta`` holds numpy scalars, the message hub's
  ``HistoryBuffer`` objects, ...) fails. :func:`mmengine_safe_globals` allow-lists exactly the types those checkpoints
  contain (and a ``getattr`` restricted to HistoryBuffer's methods), so loading stays in the safe ``weights_only``
  mode; the entry points wrap the runner in it, and nobody has to set ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=0``.
* Classification checkpoints are read by the zoo's one reader (:func:`backbones.checkpoint.read_checkpoint`);
  :func:`check_checkpoint_path` only fails early, when the backbone is built, on a local file that is not there.
"""
import contextlib
import os
import pickle
import urllib.parse
from collections.abc import Iterator
from typing import Any

from backbones.checkpoint import HF_HUB_PREFIX, checkpoint_safe_globals


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling, restricted to what mmengine needs.

    mmengine's ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``; a general
    ``getattr`` would reopen the door that ``weights_only`` closes, so only public HistoryBuffer methods resolve.
    """
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_') and callable(
            getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({obj!r}, {name!r}), which is not allowed')


def _mmengine_globals() -> list[Any]:
    """Types that mmengine/mmdet/mmseg write into a checkpoint's ``meta`` and ``message_hub``."""
    found: list[Any] = []
    try:
        from mmengine.logging import HistoryBuffer

        found += [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')]
    except ImportError:
        pass
    try:
        from mmengine.config import ConfigDict

        found.append(ConfigDict)
    except ImportError:
        pass
    return found


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Allow-list the classes found in mmengine checkpoints for ``torch.load(weights_only=True)``.

    Scoped to the ``with`` block; loading keeps torch's safe unpickler, so arbitrary code in a checkpoint still fails.
    Only entries not yet allowed are added (torch's context removes its whole list on exit, so re-adding present
    ones would strip them from an enclosing block, e.g. ``init_weights`` nested inside ``runner.train()``).
    """
    with checkpoint_safe_globals(_mmengine_globals()):
        yield


def check_checkpoint_path(path: str, what: str = 'checkpoint') -> None:
    """Raise a clear error for a local checkpoint path that does not exist (URLs and Hugging Face Hub ids are checked
    on download)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'{what} must be a file path, URL or hf-hub:<repo id>, got {type(path).__name__}')
    remote = urllib.parse.urlparse(str(path)).scheme in ('http', 'https') or str(path).startswith(HF_HUB_PREFIX)
    if not remote and not os.path.isfile(path):
        raise FileNotFoundError(f'{what} file not found: {path}')
