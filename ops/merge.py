"""Exact merging of attentions computed over disjoint key sets, through their log-sum-exps.

Any op of the zoo that takes ``return_lse=True`` (neighborhood, dense cross-attention) can be merged with any
other over the same queries: e.g. a local window plus a set of pooled tokens, each on its fastest op.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .maps import _recorder

__all__ = ['merge_attentions']


def merge_attentions(outputs: Sequence[Tensor], lses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Exactly merge attentions of one query set over disjoint key sets: ``(out, lse)`` of the union.

    ``outputs[i]`` is ``[..., D]`` and ``lses[i]`` the matching ``[...]`` log-sum-exp (``-inf`` where a part saw
    no key). Differentiable through outputs and lses.
    """
    if len(outputs) == 0 or len(outputs) != len(lses):
        raise ValueError(f'merge_attentions needs as many outputs as lses (at least one), got {len(outputs)} and '
                         f'{len(lses)}')
    for i, (o, lse) in enumerate(zip(outputs, lses)):
        if o.shape != outputs[0].shape or tuple(lse.shape) != tuple(o.shape[:-1]):
            raise ValueError(f'outputs[{i}] {tuple(o.shape)} / lses[{i}] {tuple(lse.shape)} do not match outputs[0] '
                             f'{tuple(outputs[0].shape)} (lse must be the output shape without its last dim)')
    dtype = torch.float64 if outputs[0].dtype == torch.float64 else torch.float32
    lse = torch.stack([x.to(dtype) for x in lses])
    # rows no part saw: keep -inf - -inf out of logsumexp's backward (it would send NaN into every gradient)
    finite = torch.isfinite(lse).any(0)
    total = torch.where(finite, torch.logsumexp(torch.where(finite, lse, 0), 0), float('-inf'))
    weights = torch.where(finite, torch.exp(lse - torch.where(finite, total, 0)), 0)
    out = sum(w[..., None] * o.to(dtype) for w, o in zip(weights, outputs))
    if _recorder.active is not None:  # recorded partial attentions become one softmax
        _recorder.current('merge_attentions').merge(lses, total)
    return out.to(outputs[0].dtype), total
