"""The torch backend of dense cross-attention: ``F.scaled_dot_product_attention`` where it serves.

Without ``return_lse`` the call is one SDPA (flash / memory-efficient kernels on CUDA when no bias is given, the
memory-efficient kernel with a bias and its gradient, the fused CPU kernel on CPU). SDPA's public API gives no
log-sum-exp, and the private kernels that compute one (``_scaled_dot_product_*_attention``) do not backpropagate
through it, which an lse merge needs; so with ``return_lse`` the logits ``[B, H, N, M]`` are materialised (M is
small), in fp32 (fp64 for fp64) as the fused kernels accumulate, and normalised with the max subtracted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._registry import Backend

__all__ = ['BACKEND', 'forward', 'forward_with_dropout']


def _heads_first(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``[B, T, H, D] -> [B, H, T, D]`` views, D made unit-stride first where it is not (a map flattened from NCHW):
    SDPA's fused kernels need it, and without them it falls back to the math path that materialises T x T."""
    return tuple((x if x.stride(-1) == 1 else x.contiguous()).transpose(1, 2) for x in xs)


def forward_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float,
                         dropout_p: float) -> torch.Tensor:
    """``out [B, N, H, Dv]`` with dropout ``dropout_p`` on the attention probabilities (SDPA's own)."""
    out = F.scaled_dot_product_attention(*_heads_first(q, k, v), attn_mask=bias, dropout_p=dropout_p, scale=scale)
    return out.transpose(1, 2)


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float,
            return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(out [B, N, H, Dv] in q.dtype, lse [B, N, H] or None)``."""
    if not return_lse:
        return forward_with_dropout(q, k, v, bias, scale, 0.0), None
    qh, kh, vh = _heads_first(q, k, v)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    # the scale on q and the normaliser on the output: two passes fewer over the [N, M] logits
    logits = torch.matmul(qh.to(acc) * scale, kh.to(acc).transpose(-1, -2))
    if bias is not None:
        logits = logits + bias.to(acc)
    # the max only stabilises exp (the result does not depend on it): detached, and 0 for rows with no key
    peak = logits.detach().amax(-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, 0)
    weights = torch.exp(logits - peak)
    total = weights.sum(-1, keepdim=True)
    seen = total > 0
    total = torch.where(seen, total, 1)  # rows whose keys are all masked: output 0, lse -inf, finite gradients
    out = (torch.matmul(weights.to(v.dtype), vh) / total.to(v.dtype)).to(v.dtype)
    lse = torch.where(seen, peak + total.log(), float('-inf')).squeeze(-1)
    return out.transpose(1, 2), lse.transpose(1, 2)


# deterministic: torch's SDPA dispatcher follows torch.use_deterministic_algorithms itself
BACKEND = Backend('dense', 'sdpa', forward, forward_with_dropout=forward_with_dropout, dropout=True, priority=10)
