"""Brute-force reference backend: dense logits with the pattern as an ``[N, N]`` mask. The oracle of every test.

Computes in float64 for float64 inputs (``gradcheck``) and float32 otherwise; memory is O(N^2), so it is
meant for checking, not for training.
"""
from __future__ import annotations

import torch

from ..._registry import Backend
from ..pattern import NASpec, dense_mask, dense_rpb_index

__all__ = ['BACKEND', 'forward', 'backward']


def _flat(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, *S, H, D] -> [B, H, N, D] in the compute dtype."""
    b, h, d = x.shape[0], x.shape[-2], x.shape[-1]
    return x.reshape(b, -1, h, d).transpose(1, 2).to(dtype)


def _logits(q, k, v, spec, scale, rpb, add_k, add_v):
    """Masked logits ``[B, H, N, N + E]`` and the values ``[B, H, N + E, D]`` they weigh, in the compute dtype."""
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
    return logits, qf, kf, vf


def _softmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # a query that sees no key gets lse -inf and probabilities 0; its all -inf row is kept out of logsumexp, whose
    # backward would send NaN into every gradient when this forward is differentiated directly (tests do)
    seen = torch.isfinite(logits).any(-1)
    lse = torch.where(seen, torch.logsumexp(torch.where(seen[..., None], logits, 0), dim=-1), float('-inf'))
    probs = torch.where(seen[..., None], torch.exp(logits - torch.where(seen, lse, 0)[..., None]), 0)
    return probs, lse


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: NASpec, scale: float,
            rpb: torch.Tensor | None = None, add_k: torch.Tensor | None = None,
            add_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(out [B, *S, H, D] in q.dtype, lse [B, *S, H])``; differentiable through autograd."""
    logits, _, _, vf = _logits(q, k, v, spec, scale, rpb, add_k, add_v)
    probs, lse = _softmax(logits)
    out = probs @ vf  # [B, H, N, D]
    b, h = q.shape[0], q.shape[-2]
    out = out.transpose(1, 2).reshape(q.shape).to(q.dtype)
    lse = lse.transpose(1, 2).reshape(b, *q.shape[1:-2], h)
    return out, lse


def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, spec: NASpec, scale: float, rpb: torch.Tensor | None = None,
             add_k: torch.Tensor | None = None, add_v: torch.Tensor | None = None,
             grad_lse: torch.Tensor | None = None, need_rpb: bool = True, need_extra: bool = True) -> tuple:
    """Gradients ``(dq, dk, dv, drpb, dadd_k, dadd_v)`` (``None`` for absent or unneeded ones) from the dense
    recomputed probabilities.

    Explicit math rather than autograd: custom-op kernels run below the autograd dispatch key. ``out`` and
    ``lse`` are recomputed in the compute dtype instead of trusting the caller's.
    """
    with torch.no_grad():
        logits, qf, kf, vf = _logits(q, k, v, spec, scale, rpb, add_k, add_v)
        probs, _ = _softmax(logits)
        dof = _flat(grad_out, probs.dtype)
        delta = (dof * (probs @ vf)).sum(-1, keepdim=True)
        if grad_lse is not None:
            delta = delta - grad_lse.reshape(q.shape[0], -1, q.shape[-2]).transpose(1, 2)[..., None].to(delta.dtype)
        ds = probs * (dof @ vf.transpose(-1, -2) - delta)  # [B, H, N, N + E]
        n = kf.shape[2]
        keys = kf if add_k is None else torch.cat([kf, add_k.transpose(1, 2).to(kf.dtype).expand(
            kf.shape[0], -1, -1, -1)], dim=-2)
        dq = (ds @ keys) * scale
        dkeys = (ds.transpose(-1, -2) @ qf) * scale
        dvals = probs.transpose(-1, -2) @ dof

        def unflat(x, like):
            return x.transpose(1, 2).reshape(like.shape).to(like.dtype)

        drpb = dadd_k = dadd_v = None
        if rpb is not None and need_rpb:
            index = dense_rpb_index(spec, q.shape[1:-2], q.device)
            flat = torch.zeros_like(index[0])
            for idx, k_ in zip(index, spec.kernel_size):
                flat = flat * (2 * k_ - 1) + idx
            drpb = torch.zeros(rpb.shape[0], rpb[0].numel(), dtype=ds.dtype, device=ds.device)
            drpb.index_add_(1, flat.reshape(-1), ds[..., :n].sum(0).reshape(rpb.shape[0], -1))
            drpb = drpb.reshape(rpb.shape).to(rpb.dtype)
        if add_k is not None and need_extra:
            dak, dav = dkeys[:, :, n:], dvals[:, :, n:]
            if add_k.shape[0] != q.shape[0]:
                dak, dav = dak.sum(0, keepdim=True), dav.sum(0, keepdim=True)
            dadd_k, dadd_v = dak.transpose(1, 2).to(add_k.dtype), dav.transpose(1, 2).to(add_v.dtype)
        return unflat(dq, q), unflat(dkeys[:, :, :n], k), unflat(dvals[:, :, :n], v), drpb, dadd_k, dadd_v


BACKEND = Backend('na', 'reference', forward, backward, auto=False)
