"""The feature maps, key re-weighting and RoPE rotation both backends share (elementwise and O(N) steps)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ['feature', 'rotate', 'state_scale']


def feature(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == 'elu+1':
        return F.elu(x) + 1.0
    if name == 'relu':
        return F.relu(x)
    if name == 'leakyrelu':
        return F.leaky_relu(x)  # nn.LeakyReLU's default slope 0.01 (InLine's kernel_func='leakyrelu')
    if name == 'exp':
        return (x * 0.2).exp()  # InLine's exp_kernel, t = 0.2
    return x


def rotate(x: torch.Tensor, sin: torch.Tensor | None, cos: torch.Tensor | None) -> torch.Tensor:
    """RoPE on ``[B, N, H, D]`` with ``[N, D]`` tables, rotating the pairs (2i, 2i+1) as RALA's ``theta_shift``."""
    if sin is None:
        return x
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
    return x * cos[:, None].to(x.dtype) + rotated * sin[:, None].to(x.dtype)


def reweight(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """RALA's keys ``k * softmax_N(D^-0.5 mean_N(q) . k) * N``: key importance guided by the mean query."""
    n, d = k.shape[1], k.shape[-1]
    logits = torch.einsum('bhd,bnhd->bnh', q.mean(1), k) * d ** -0.5
    return k * (logits.softmax(1) * n)[..., None]


def state_scale(scale, h: int, dtype: torch.dtype):
    """``scale`` as a float or a ``[H, 1]`` tensor (per head) in ``dtype``, broadcasting over ``[B, N, H, Dv]``."""
    return scale.to(dtype).reshape(h, 1) if isinstance(scale, torch.Tensor) else scale
