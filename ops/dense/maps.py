"""Exact attention rows of chosen queries for dense cross-attention, and the recording glue of ``ops.dense``.

:func:`attention_rows` is :func:`ops.dense_attention`'s softmax (``q k^T * scale + bias``) for a few query tokens:
``P x M`` logits, never ``N x M``. Agent attention (:func:`ops.agent_attention`) records as its two dense calls
over the token set ``'agents'``, which :mod:`ops.maps` composes into exact query-to-key weights.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..maps import _recorder

__all__ = ['attention_rows']


def attention_rows(query: Tensor, key: Tensor, bias: Tensor | None, scale: float,
                   index: Tensor) -> tuple[Tensor, Tensor]:
    """``(probs [B, P, heads, M], lse [B, P, heads])`` of the query tokens ``index`` (``[P]``, long); args as
    :func:`ops.dense_attention`. float64 for float64 inputs, float32 otherwise; a query whose keys are all masked
    (bias ``-inf``) gets zeros and lse ``-inf``."""
    compute = torch.float64 if query.dtype == torch.float64 else torch.float32
    index = index.to(query.device)
    logits = torch.einsum('bphd,bmhd->bhpm', query[:, index].to(compute), key.to(compute)) * scale
    if bias is not None:
        bias = bias.to(compute)
        if bias.dim() >= 2 and bias.shape[-2] != 1:
            bias = bias.index_select(-2, index)
        logits = logits + bias
    seen = torch.isfinite(logits).any(-1)
    lse = torch.where(seen, torch.logsumexp(torch.where(seen[..., None], logits, 0), -1), float('-inf'))
    probs = torch.where(seen[..., None], torch.exp(logits - torch.where(seen, lse, 0)[..., None]), 0)
    return probs.transpose(1, 2), lse.transpose(1, 2)


def record(query: Tensor, key: Tensor, bias: Tensor | None, scale: float, token_grid, lse: Tensor | None) -> None:
    """Give the active recording this call's rows (see :mod:`ops.maps` for ``token_grid``)."""
    op = 'dense_attention'
    rec = _recorder.current(op)
    q_grid, k_grid = rec.flat_grids(token_grid, query.shape[1], key.shape[1], op)
    if not isinstance(q_grid, str):
        rec.check_batch(query.shape[0], op)
    with torch.no_grad():
        rows, row_lse = attention_rows(query, key, bias, scale, rec.flat_queries(q_grid, query.shape[1]))
        segments, via = rec.flat_segments(k_grid, rows, op)
    if isinstance(q_grid, str):
        rec.define_set(q_grid, segments)
        return
    kind = k_grid if isinstance(k_grid, str) else 'dense' if k_grid.name == 'map' else k_grid.name
    rec.add(_recorder._Partial(kind, q_grid.shape, torch.ones(rows.shape[1], dtype=torch.bool), segments,
                               None if via else row_lse, via=via), None if via else lse)
