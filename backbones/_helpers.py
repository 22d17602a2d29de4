"""Helpers shared by the model families."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ['CHECKPOINT_WRAPPERS', 'unwrap_state_dict']

# timm's order: the EMA weights (the ones a training run evaluated) before the raw ones
CHECKPOINT_WRAPPERS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a plain state dict or of a wrapped training checkpoint, without a DDP ``module.`` prefix.

    Raises ``ValueError`` naming the first entry that is not a tensor (e.g. a wrapper this function does not know).
    """
    for key in CHECKPOINT_WRAPPERS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    out = {}
    for k, v in checkpoint.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f'checkpoint entry {k!r} is a {type(v).__name__}, not a tensor; expected a state dict, '
                             f'optionally wrapped in one of {CHECKPOINT_WRAPPERS}')
        out[k[len('module.'):] if k.startswith('module.') else k] = v
    return out
