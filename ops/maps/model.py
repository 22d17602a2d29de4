"""``attention_maps(model, x, points)``: a model's exact attention maps for chosen image positions, per layer."""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._recorder import AttentionMap, record_attention

__all__ = ['attention_maps', 'select_layers']


def select_layers(maps: dict[str, AttentionMap], layers: Sequence[int | str] | None) -> dict[str, AttentionMap]:
    """The records ``layers`` names: ints index them in execution order (negative from the end), strings are
    names or ``fnmatch`` patterns (timm's ``AttentionExtract`` ``names``); ``None`` keeps all."""
    if layers is None:
        return dict(maps)
    if isinstance(layers, (str, int)):
        layers = [layers]
    names = list(maps)
    chosen: list[str] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, str)):
            raise TypeError(f'layers must hold ints (positions) or names / patterns, got {layer!r}')
        if isinstance(layer, int):
            if not -len(names) <= layer < len(names):
                raise IndexError(f'layer index {layer} does not exist: the model has {len(names)} attention layers '
                                 f'(0..{len(names) - 1}, or negative from the end)')
            found = [names[layer]]
        else:
            found = [n for n in names if fnmatch.fnmatchcase(n, layer)]
            if not found:
                raise ValueError(f'no attention layer matches {layer!r}; the model has {len(names)}: '
                                 f'{", ".join(names[:6])}{", ..." if len(names) > 6 else ""}')
        chosen += [n for n in found if n not in chosen]
    return {n: maps[n] for n in names if n in chosen}


def attention_maps(model: nn.Module, x: Tensor, points: Sequence[Sequence[float]],
                   layers: Sequence[int | str] | None = None) -> dict[str, AttentionMap]:
    """Run ``model`` on ``x [B, C, H, W]`` (no grad, its current mode) and return the exact attention of the queries
    at ``points`` in every attention layer, as :class:`AttentionMap` records keyed by layer name (the innermost
    module running the op, e.g. ``'stages.1.blocks.0.attn'``; ``name:kind`` where one module runs several).

    ``points``: ``(x, y)`` pixel positions in the image; on each layer's map the query is the cell holding the
    pixel's centre. ``layers``: see :func:`select_layers`. The model's outputs are what they are without recording.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be a torch.nn.Module, got {type(model).__name__}')
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f'x must be an image batch [batch, channels, height, width], got '
                         f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
    with torch.no_grad(), record_attention(points, tuple(x.shape[-2:]), model, batch=x.shape[0]) as rec:
        model(x)
    if not rec.maps:
        raise ValueError(f'{type(model).__name__} has no attention layer to map: its forward called none of the '
                         f'attention ops of `ops` (na*, window/grid/routed/dense/agent/linear attention)')
    return select_layers(rec.maps, layers)
