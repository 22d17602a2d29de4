"""Exact attention maps from the ops, for chosen queries: what each layer of a model attends to.

The ops never materialise their attention weights; while :func:`record_attention` is active each op computes the
rows of a few chosen queries from its own inputs (the same softmax; for linear attention the implied weights),
never an N x N matrix, and the rows come back as :class:`AttentionMap` records over each layer's key grid.
:func:`attention_maps` runs a model on an image and returns them per layer. Modules whose op sees padded or
flat tokens pass ``token_grid=`` (:class:`TokenGrid`, or a token-set name) to say where they lie on the map.
"""
from ._recorder import AttentionMap, Recording, TokenGrid, record_attention
from .model import attention_maps

__all__ = ['AttentionMap', 'Recording', 'TokenGrid', 'attention_maps', 'record_attention']
