"""Dense cross-attention: N queries over a small set of M keys (M != N), with an additive bias and the lse.

Agent attention's agent tokens, GLMix's slots, HiLo's Lo-Fi pooled keys, TransNeXt's pooled tokens and PVT's
spatial reduction all attend N map tokens to M << N other tokens; :func:`agent_attention` (``agent``) is two
such calls. ``api`` validates and dispatches; ``backends`` holds the ``reference`` oracle and the ``sdpa`` path
(``F.scaled_dot_product_attention`` underneath); ``flops`` the fvcore handle for SDPA. A plain composite (no
custom op): SDPA and matmuls are already traceable by ``torch.compile`` and countable by fvcore. ``cpb`` holds
TransNeXt's position-bias and length-scale tables over pooled keys, with their custom op
(``attnzoo::transnext_stage_tables``, for ``torch.compile``; its ONNX lowering in ``onnx_cpb``).
"""
from . import flops as _flops  # noqa: F401  (registers the fvcore FLOP handle)
from .agent import agent_attention
from .api import dense_attention
from .cpb import StageTables, relative_position_cpb, transnext_stage_tables

__all__ = ['dense_attention', 'agent_attention', 'StageTables', 'relative_position_cpb', 'transnext_stage_tables']
