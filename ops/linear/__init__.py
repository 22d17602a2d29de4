"""Kernelised linear attention: ``phi(q) (phi(k)^T v)`` with a normaliser, the state accumulated in fp32.

RALA's ``GateLinearAttentionNoSilu`` (RAVLT) and L2ViT's ``LinearAttention`` are parameter settings of one op
(:func:`linear_attention`): the feature map ``phi``, RALA's query-guided key re-weighting, 2-D RoPE on the
numerator, the normaliser's key reduction / epsilon / clamp, and a state scale (RALA's ``N^-1``, L2ViT's per-head
temperature); InLine's injective linear attention is its ``normalizer='inline'`` mode. ``api`` validates and
dispatches; ``backends`` holds the float64 ``reference`` (quadratic, q k^T first: an independent algorithm) and
the ``torch`` path (k^T v first, linear in N). A composite: plain matmuls
are traceable by ``torch.compile`` and countable by fvcore.
"""
from .api import apply_rope, linear_attention, rope_2d

__all__ = ['linear_attention', 'rope_2d', 'apply_rope']
