"""Pure-PyTorch backend of routed attention: bounded memory on any device, explicit FlashAttention-style backward.

Tokens are permuted once into region-major ``[B, heads, R, S, D]`` copies (1x the input, in fp32 / fp64), so a
region is a contiguous ``[S, D]`` block. Query regions are processed in chunks: a chunk's routed key and value
regions are fetched with one ``index_select`` (``[B, heads, c, topk * S, D]``, the chunk's keys only), then a
dense attention of each region's ``S`` queries over its ``topk * S`` keys: on CPU (unmasked keys, value_dim ==
head_dim) the fused flash kernel under ``F.scaled_dot_product_attention``, called for its log-sum-exp; else
matmul, softmax, matmul. The chunk size keeps every per-chunk tensor under ``_CHUNK_ELEMENTS``, so peak memory is
the inputs' copies plus a constant, never the official k-fold gathered K/V of the whole map.

The backward recomputes each chunk's probabilities from the saved log-sum-exp (nothing per pair is stored; on CPU
the fused kernel's backward, except with an lse gradient) and scatter-adds the key/value gradients of the chunk's
routed regions with ``index_add_`` (deterministic on CPU, and on CUDA under
``torch.use_deterministic_algorithms(True)``).
"""
from __future__ import annotations

import torch

from ..._registry import Backend
from ..regions import RegionGrid, from_regions, to_regions, valid_tokens

__all__ = ['BACKEND', 'forward', 'backward']

# Upper bound on the elements of one chunk's scores or gathered keys / values (1M fp32 = 4 MiB).
_CHUNK_ELEMENTS = 1 << 20


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _chunks(b: int, h: int, grid: RegionGrid, topk: int, d: int, dv: int):
    s = grid.region_size
    step = max(1, _CHUNK_ELEMENTS // (b * h * topk * s * max(s, d, dv)))
    for r0 in range(0, grid.n_regions, step):
        yield r0, min(r0 + step, grid.n_regions)


class _Gather:
    """Fetch the routed regions of a chunk of query regions from region-major ``[B, H, R, S, *]`` tensors."""

    def __init__(self, indices: torch.Tensor, heads: int, grid: RegionGrid, valid_shape, dtype):
        b, r, _ = indices.shape
        base = (torch.arange(b, device=indices.device)[:, None] * heads
                + torch.arange(heads, device=indices.device)[None, :]) * r  # [B, H]
        self.base, self.indices, self.grid = base[:, :, None, None], indices, grid
        self.bias = None
        if valid_shape is not None and tuple(valid_shape) != grid.shape:
            valid = valid_tokens(grid, valid_shape, indices.device)
            self.bias = torch.zeros(valid.shape, dtype=dtype, device=indices.device).masked_fill_(~valid, -torch.inf)

    def flat(self, r0: int, r1: int) -> torch.Tensor:
        """``[B * H * c * topk]`` rows of the flattened ``[(B H R), S * D]`` tensors."""
        return (self.base + self.indices[:, None, r0:r1]).reshape(-1)

    def take(self, x: torch.Tensor, flat: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        b, h, r, s, d = x.shape
        return x.view(b * h * r, s * d).index_select(0, flat).view(b, h, r1 - r0, -1, d)

    def key_bias(self, r0: int, r1: int) -> torch.Tensor | None:
        """``[B, 1, c, 1, topk * S]`` logit bias masking padded keys (``None`` when every key is valid)."""
        if self.bias is None:
            return None
        b = self.indices.shape[0]
        return self.bias[self.indices[:, r0:r1]].view(b, 1, r1 - r0, 1, -1)


def _scores(qc, kc, bias):
    s = qc @ kc.transpose(-1, -2)
    return s if bias is None else s.add_(bias)


# The fused CPU kernel of F.scaled_dot_product_attention, called directly for its log-sum-exp (the public API
# returns none; this is a forward and an explicit backward, no autograd through it). Absent in a torch that lacks
# it: the matmul path serves.
_FLASH_CPU = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)
_FLASH_CPU_BWD = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu_backward', None)


def _use_flash(q: torch.Tensor, v: torch.Tensor, gather: _Gather) -> bool:
    """The fused CPU kernel serves unmasked keys with value_dim == head_dim."""
    return (_FLASH_CPU is not None and _FLASH_CPU_BWD is not None and q.device.type == 'cpu' and gather.bias is None
            and q.shape[-1] == v.shape[-1])


def _bhc(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, c, T(, D)]`` chunk -> ``[B * H, c, T(, D)]`` (a view: B and H collapse in region-major tensors)."""
    return x.flatten(0, 1)


def forward(q, k, v, indices, grid: RegionGrid, scale: float, valid_shape=None):
    """``(out [B, H, W, heads, Dv] in q.dtype, lse [B, H, W, heads])``; lse float32 (float64 for float64)."""
    with torch.no_grad():
        b, _, _, h, d = q.shape
        dv, topk = v.shape[-1], indices.shape[-1]
        dtype = _compute_dtype(q)
        gather = _Gather(indices, h, grid, valid_shape, dtype)
        flash = _use_flash(q, v, gather)
        qr = to_regions(q, grid, dtype)
        if not flash:
            qr.mul_(scale)
        kr, vr = to_regions(k, grid, dtype), to_regions(v, grid, dtype)
        out = torch.empty(*qr.shape[:-1], dv, dtype=dtype, device=q.device)
        lse = torch.empty(qr.shape[:-1], dtype=dtype, device=q.device)
        for r0, r1 in _chunks(b, h, grid, topk, d, dv):
            flat = gather.flat(r0, r1)
            qc, kc, vc = qr[:, :, r0:r1], gather.take(kr, flat, r0, r1), gather.take(vr, flat, r0, r1)
            if flash:
                o, lse_c = _FLASH_CPU(_bhc(qc), _bhc(kc), _bhc(vc), scale=scale)
                out[:, :, r0:r1] = o.view(qc.shape[:-1] + (dv,))
                lse[:, :, r0:r1] = lse_c.view(qc.shape[:-1])
                continue
            s = _scores(qc, kc, gather.key_bias(r0, r1))
            m = s.amax(-1, keepdim=True)
            m = torch.where(torch.isfinite(m), m, 0)
            p = s.sub_(m).exp_()
            denom = p.sum(-1, keepdim=True)
            lse[:, :, r0:r1] = (m + denom.log()).squeeze(-1)  # log(0) = -inf: no key seen
            # a query that saw no key has p = 0, so o = 0: dividing by a clamped denominator keeps it 0
            out[:, :, r0:r1] = (p @ vc).div_(denom.clamp_(min=torch.finfo(dtype).tiny))
        return from_regions(out, grid).to(q.dtype), from_regions(lse[..., None], grid)[..., 0]


def backward(grad_out, q, k, v, out, lse, indices, grid: RegionGrid, scale: float, valid_shape=None,
             grad_lse=None):
    """``(dq, dk, dv)``, each chunk's probabilities recomputed from ``lse``."""
    with torch.no_grad():
        b, _, _, h, d = q.shape
        dv_dim, topk = v.shape[-1], indices.shape[-1]
        dtype = _compute_dtype(q)
        gather = _Gather(indices, h, grid, valid_shape, dtype)
        flash = grad_lse is None and _use_flash(q, v, gather)  # the fused backward takes no lse gradient
        qr = to_regions(q, grid, dtype)
        kr, vr = to_regions(k, grid, dtype), to_regions(v, grid, dtype)
        dor, outr = to_regions(grad_out, grid, dtype), to_regions(out, grid, dtype)
        lser = to_regions(lse[..., None], grid, dtype)
        if not flash:
            qr.mul_(scale)
            delta = (dor * outr).sum(-1, keepdim=True)  # [B, H, R, S, 1]
            if grad_lse is not None:
                delta -= to_regions(grad_lse[..., None], grid, dtype)
            lser = torch.where(torch.isfinite(lser), lser, torch.inf)  # queries that saw no key: p = 0
        dq = torch.empty_like(qr)
        dk, dv = torch.zeros_like(kr), torch.zeros_like(vr)
        s_ = grid.region_size
        for r0, r1 in _chunks(b, h, grid, topk, d, dv_dim):
            flat = gather.flat(r0, r1)
            qc, doc = qr[:, :, r0:r1], dor[:, :, r0:r1]
            kc, vc = gather.take(kr, flat, r0, r1), gather.take(vr, flat, r0, r1)
            if flash:
                dqc, dkc, dvc = _FLASH_CPU_BWD(_bhc(doc), _bhc(qc), _bhc(kc), _bhc(vc), _bhc(outr[:, :, r0:r1]),
                                               _bhc(lser[:, :, r0:r1, :, 0]), 0.0, False, scale=scale)
                dq[:, :, r0:r1] = dqc.view(qc.shape)
            else:
                p = _scores(qc, kc, gather.key_bias(r0, r1)).sub_(lser[:, :, r0:r1]).exp_()
                ds = (doc @ vc.transpose(-1, -2)).sub_(delta[:, :, r0:r1]).mul_(p)  # [B, H, c, S, topk * S]
                dq[:, :, r0:r1] = (ds @ kc).mul_(scale)
                dkc, dvc = ds.transpose(-1, -2) @ qc, p.transpose(-1, -2) @ doc
            dk.view(-1, s_ * d).index_add_(0, flat, dkc.reshape(-1, s_ * d))
            dv.view(-1, s_ * dv_dim).index_add_(0, flat, dvc.reshape(-1, s_ * dv_dim))
        dq = from_regions(dq, grid).to(q.dtype)
        return dq, from_regions(dk, grid).to(k.dtype), from_regions(dv, grid).to(v.dtype)


BACKEND = Backend('routed', 'torch', forward, backward, priority=10)
