"""Agent attention (Agent Attention, ECCV 2024): N queries meet N keys through a small set of A agent tokens.

Two dense cross-attentions of different lengths, never the N x N matrix: the agents gather from the keys
(``softmax(agents k^T * scale + bias1) v``, A x M logits), then every query reads the agents
(``softmax(q agents^T * scale + bias2)`` of that, N x A logits). The agents themselves (an adaptive average pool
of the queries), the position biases and the depthwise-conv term on v belong to the model using it.
"""
from __future__ import annotations

from torch import Tensor

from ..maps import _recorder
from .api import dense_attention

__all__ = ['agent_attention']


def agent_attention(query: Tensor, key: Tensor, value: Tensor, agents: Tensor, bias1: Tensor | None = None,
                    bias2: Tensor | None = None, scale: float | None = None, dropout_p: float = 0.0,
                    backend: str | None = None, token_grid=None) -> Tensor:
    """``softmax(q a^T * scale + bias2) softmax(a k^T * scale + bias1) v`` through :func:`ops.dense_attention`.

    Args:
        query: ``[batch, N, heads, head_dim]``; key ``[batch, M, heads, head_dim]``; value ``[batch, M, heads, Dv]``.
        agents: ``[batch, A, heads, head_dim]`` agent tokens.
        bias1: agent -> key logit bias, broadcastable to ``[batch, heads, A, M]``.
        bias2: query -> agent logit bias, broadcastable to ``[batch, heads, N, A]``.
        scale: logit scale of both attentions, default ``head_dim ** -0.5``.
        dropout_p: dropout on both attentions' probabilities (the official ``attn_drop``, applied to both).
        backend: passed to both :func:`ops.dense_attention` calls.
        token_grid: where the query and key tokens lie (as :func:`ops.dense_attention`'s), read only while attention
            maps are recorded: the two calls attend over the token set ``'agents'``, so the recorded map is the
            composed query-to-key weights (``via['agents']``: the weights over the agents).

    Returns ``[batch, N, heads, Dv]``. Dtypes and autocast as :func:`ops.dense_attention`.
    """
    q_grid = k_grid = None
    if _recorder.active is not None and token_grid is not None:  # the recording composes them over 'agents'
        q_grid, k_grid = _recorder.grid_pair(token_grid)
    agent_values = dense_attention(agents, key, value, bias1, scale=scale, dropout_p=dropout_p, backend=backend,
                                   token_grid=None if k_grid is None else ('agents', k_grid))
    return dense_attention(query, agents, agent_values, bias2, scale=scale, dropout_p=dropout_p, backend=backend,
                           token_grid=None if q_grid is None else (q_grid, 'agents'))
