"""Checkpoint reading for the downstream integration.

Two problems live here:

* torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load`` without the
  argument, so loading or resuming an mmengine checkpoint (its ``meta`` holds numpy scalars, the message hub's
  ``HistoryBuffer`` objects, ...) fails. :func:`mmengine_safe_globals` allow-lists exactly the types those checkpoints
  contain (and a ``getattr`` restricted to HistoryBuffer's methods), so loading stays in the safe ``weights_only``
  mode; the entry points wrap the runner in it, and nobody has to set ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=0``.
* Classification checkpoints (ours or official) come in several wrappers (``state_dict``, ``model``, EMA keys).
  :func:`read_state_dict` unwraps them with :func:`backbones.checkpoint.unwrap_state_dict`, the rule every loader of
  the zoo uses (the family's default weights unless ``use_ema`` chooses).
"""
import contextlib
import os
import pickle
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import torch

from backbones.checkpoint import checkpoint_safe_globals, unwrap_state_dict


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


def _is_url(path: str) -> bool:
    return urllib.parse.urlparse(path).scheme in ('http', 'https')


HF_HUB_PREFIX = 'hf-hub:'


def _is_remote(path: str) -> bool:
    return _is_url(path) or path.startswith(HF_HUB_PREFIX)


def check_checkpoint_path(path: str, what: str = 'checkpoint') -> None:
    """Raise a clear error for a local checkpoint path that does not exist (URLs and Hugging Face Hub ids are checked
    on download)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'{what} must be a file path, URL or hf-hub:<repo id>, got {type(path).__name__}')
    if not _is_remote(str(path)) and not os.path.isfile(path):
        raise FileNotFoundError(f'{what} file not found: {path}')


def read_state_dict(path: str, use_ema: bool | None = None, prefer_ema: bool = True,
                    reader: Callable[[str, bool | None], dict[str, Any]] | None = None) -> dict[str, torch.Tensor]:
    """Load a classification checkpoint and unwrap it to a flat state dict.

    ``path``: a local file, an http(s) URL, or ``hf-hub:<repo id>`` (timm's notation, e.g.
    ``hf-hub:timm/nextvit_small.bd_in1k``: the repo's weights through timm's Hub loader, safetensors first, cached by
    huggingface_hub; a plain URL is cached by its file name alone, which every Hub model shares).

    ``use_ema`` True / False takes the EMA / raw weights; None the EMA ones first when ``prefer_ema`` (the family's
    default, :func:`backbones.checkpoint.ema_first`). A ``module.`` (DDP) prefix is stripped. ``reader``: the
    family's own reader of local files and URLs (:func:`backbones.checkpoint.weights_reader`; MOAT's TF1 releases),
    which chooses the EMA weights itself.
    """
    check_checkpoint_path(path)
    path = str(path)
    if path.startswith(HF_HUB_PREFIX):
        from timm.models import load_state_dict_from_hf

        try:
            state_dict = load_state_dict_from_hf(path[len(HF_HUB_PREFIX):])
        except Exception as e:  # no such repo / no network / unreadable file
            raise RuntimeError(f'cannot read checkpoint {path}: {e}') from e
        return unwrap_state_dict(state_dict, use_ema, prefer_ema)
    if _is_url(path):
        from timm.models._hub import download_cached_file

        path = download_cached_file(path, check_hash=False, progress=True)
    if reader is not None:
        try:
            return reader(path, use_ema)
        except (RuntimeError, ValueError, OSError) as e:
            raise RuntimeError(f'cannot read checkpoint {path}: {e}') from e
    try:
        with mmengine_safe_globals():
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # unreadable, truncated or not a torch file
        raise RuntimeError(f'cannot read checkpoint {path}: {e}') from e
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f'checkpoint {path} holds a {type(checkpoint).__name__}, expected a state dict')
    try:
        state_dict = unwrap_state_dict(checkpoint, use_ema, prefer_ema)
    except ValueError as e:
        raise RuntimeError(f'checkpoint {path}: {e}') from None
    if not state_dict:
        raise RuntimeError(f'checkpoint {path} does not hold a state dict of tensors')
    return state_dict
