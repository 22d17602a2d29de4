"""Brute-force reference backend: dense logits with the pattern as an ``[N, N]`` mask. The oracle of every test.

Computes in float64 for float64 inputs (``gradcheck``) and float32 otherwise; memory is O(N^2), so it is
meant for checking, not for training.
"""
from __future__ import annotations

import torch

from .._pattern import NASpec, dense_mask, dense_rpb_index

__all__ = ['forward', 'backward']


def _flat(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, *S, H, D] -> [B, H, N, D] in the compute dtype."""
    b, h, d = x.shape[0], x.shape[-2], x.shape[-1]
    return x.reshape(b, -1, h, d).transpose(1, 2).to(dtype)


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: NASpec, scale: float,
            rpb: torch.Tensor | None = None, add_k: torch.Tensor | None = None,
            add_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(out [B, *S, H, D] in q.dtype, lse [B, *S, H])``; differentiable through autograd."""
    shape = q.shape[1:-2]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf, vf = _flat(q, compute), _flat(k, compute), _flat(v, compute)
    logits = (qf @ kf.transpose(-1, -2)) * scale  # [B, H, N, N]
    mask = dense_mask(spec, shape, q.device)
    if rpb is not None:
        logits = logits + rpb.to(compute)[(slice(None), *dense_rpb_index(spec, shape, q.device))]
    logits = logits.masked_fill(~mask, float('-inf'))
    if add_k is not None:
        ak, av = add_k.transpose(1, 2).to(compute), add_v.transpose(1, 2).to(compute)
        logits = torch.cat([logits, (qf @ ak.transpose(-1, -2)) * scale], dim=-1)
        vf = torch.cat([vf, av.expand(vf.shape[0], -1, -1, -1)], dim=-2)
    lse = torch.logsumexp(logits, dim=-1)  # -inf for a query that sees no key
    finite = torch.isfinite(lse)
    probs = torch.where(finite[..., None], torch.exp(logits - torch.where(finite, lse, 0)[..., None]), 0)
    out = probs @ vf  # [B, H, N, D]
    b, h = q.shape[0], q.shape[-2]
    out = out.transpose(1, 2).reshape(q.shape).to(q.dtype)
    lse = lse.transpose(1, 2).reshape(b, *shape, h)
    return out, lse


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, spec: NASpec, scale: float, rpb: torch.Tensor | None = None,
             add_k: torch.Tensor | None = None, add_v: torch.Tensor | None = None) -> tuple:
    """Gradients ``(dq, dk, dv, drpb, dadd_k, dadd_v)`` by recomputing :func:`forward` under autograd."""
    inputs = [q, k, v, rpb, add_k, add_v]
    leaves = [None if t is None else t.detach().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        o, _ = forward(leaves[0], leaves[1], leaves[2], spec, scale, *leaves[3:])
        present = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(o, present, grad_out, allow_unused=True))
    result = []
    for t in leaves:
        if t is None:
            result.append(None)
        else:
            g = next(grads)
            result.append(torch.zeros_like(t) if g is None else g)
    return tuple(result)
