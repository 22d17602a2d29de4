"""Brute-force reference backend of dense cross-attention: full logits, softmax, weighted sum. The test oracle.

Computes in float64 for float64 inputs (``gradcheck``) and float32 otherwise, through plain autograd.
"""
from __future__ import annotations

import torch

from ..._registry import Backend

__all__ = ['BACKEND', 'forward', 'probabilities']


def probabilities(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The full attention ``(probs [B, H, N, M], lse [B, H, N])`` in the compute dtype; a row whose keys are all
    masked gets probabilities 0 and lse ``-inf`` (and no NaN from logsumexp's backward)."""
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    logits = torch.einsum('bnhd,bmhd->bhnm', q.to(compute), k.to(compute)) * scale
    if bias is not None:
        logits = logits + bias.to(compute)
    seen = torch.isfinite(logits).any(-1)
    safe = torch.where(seen[..., None], logits, 0)
    probs = torch.where(seen[..., None], safe.softmax(-1), 0)
    return probs, torch.where(seen, safe.logsumexp(-1), float('-inf'))


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float,
            return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(out [B, N, H, Dv] in q.dtype, lse [B, N, H] or None)``."""
    probs, lse = probabilities(q, k, bias, scale)
    out = torch.einsum('bhnm,bmhe->bnhe', probs, v.to(probs.dtype)).to(q.dtype)
    return out, (lse.transpose(1, 2) if return_lse else None)


BACKEND = Backend('dense', 'reference', forward, auto=False)
