"""Brute-force reference of the neighbourhood weighted sum (``ops.na.na_av``): the weights scattered into a dense
``[N, N]`` matrix per (batch, head), then one matmul. The oracle of the tests; memory O(N^2)."""
from __future__ import annotations

import math

import torch

from ..._registry import Backend
from ..pattern import NASpec, axis_neighbors

__all__ = ['BACKEND', 'forward', 'backward', 'slot_keys']


def slot_keys(shape, spec: NASpec, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat key token ``[N, K]`` of every (query, window slot) and its validity (slots row-major over axes)."""
    keys = valid = None
    for axis, length in enumerate(shape):
        idx, ok = axis_neighbors(length, spec.kernel_size[axis], spec.stride[axis], spec.dilation[axis],
                                 spec.is_causal[axis], device, spec.border)
        if keys is None:
            keys, valid = idx, ok
        else:  # [n, k] x [l, j] -> [n * l, k * j]
            keys = (keys[:, None, :, None] * length + idx[None, :, None, :]).flatten(2).flatten(0, 1)
            valid = (valid[:, None, :, None] & ok[None, :, None, :]).flatten(2).flatten(0, 1)
    return keys, valid


def _dense(w: torch.Tensor, spec: NASpec, compute: torch.dtype) -> torch.Tensor:
    """``[B, H, N, N]`` dense weights from ``[B, *S, H, K]``."""
    b, *shape, h, kk = w.shape
    n = math.prod(shape)
    keys, valid = slot_keys(shape, spec, w.device)
    wf = (w.reshape(b, n, h, kk).transpose(1, 2).to(compute) * valid)
    return torch.zeros(b, h, n, n, dtype=compute, device=w.device).scatter_add_(
        -1, keys.expand(b, h, n, kk), wf)


def _compute(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def forward(w: torch.Tensor, v: torch.Tensor, spec: NASpec) -> torch.Tensor:
    """``out [B, *S, H, Dv]``: ``out[q] = sum_slot w[q, slot] * v[key(q, slot)]`` over the valid slots."""
    b, *shape, h, d = v.shape
    dense = _dense(w, spec, _compute(v))
    vf = v.reshape(b, -1, h, d).transpose(1, 2).to(dense.dtype)
    return (dense @ vf).transpose(1, 2).reshape(v.shape).to(v.dtype)


def backward(grad_out: torch.Tensor, w: torch.Tensor, v: torch.Tensor, spec: NASpec) -> tuple:
    """``(dw, dv)``; ``dw`` is 0 on invalid slots."""
    b, *shape, h, d = v.shape
    compute = _compute(v)
    dense = _dense(w, spec, compute)
    vf = v.reshape(b, -1, h, d).transpose(1, 2).to(compute)
    do = grad_out.reshape(b, -1, h, d).transpose(1, 2).to(compute)
    dv = dense.transpose(-1, -2) @ do
    keys, valid = slot_keys(shape, spec, v.device)
    n, kk = keys.shape
    dw = (do @ vf.transpose(-1, -2)).gather(-1, keys.expand(b, h, n, kk)) * valid
    return (dw.transpose(1, 2).reshape(w.shape).to(w.dtype), dv.transpose(1, 2).reshape(v.shape).to(v.dtype))


BACKEND = Backend('na_av', 'reference', forward, backward, auto=False)
