"""``NeighborhoodAttention1D/2D/3D``: drop-in replacements for NATTEN's (<= 0.17) and NAT's attention modules.

Same submodules and parameters as NATTEN's (``qkv``, ``proj``, ``rpb`` ``[heads, 2k-1, ...]``), so NAT/DiNAT
checkpoints load unchanged. Inputs smaller than ``kernel_size * dilation`` on some axis are zero-padded at the end
before ``qkv`` and the output cropped, as NATTEN 0.14's modules did (the padded tokens are ordinary keys).

Attention dropout (``attn_drop > 0`` in training) runs on the ``torch`` backend's autograd path (per-tile
probabilities are kept for backward; memory stays linear in tokens); with ``backend=None`` such calls go there
on any device, and a module pinned to another backend raises. NATTEN's fused kernels silently ignored it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from .api import neighborhood_attention
from .pattern import BoolOrTuple, IntOrTuple, to_tuple

__all__ = ['NeighborhoodAttention1D', 'NeighborhoodAttention2D', 'NeighborhoodAttention3D']


class _NeighborhoodAttention(nn.Module):
    ndim: int

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kernel_size: IntOrTuple,
            dilation: IntOrTuple = 1,
            bias: bool = True,
            qkv_bias: bool = True,
            qk_scale: float | None = None,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            stride: IntOrTuple = 1,
            is_causal: BoolOrTuple = False,
            rel_pos_bias: bool | None = None,
            backend: str | None = None,
    ):
        """``rel_pos_bias`` (NATTEN >= 0.15's name) overrides ``bias`` (NATTEN 0.14's) when given."""
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f'dim ({dim}) must be a positive multiple of num_heads ({num_heads})')
        if not 0 <= attn_drop < 1:
            raise ValueError(f'attn_drop must be in [0, 1), got {attn_drop}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = to_tuple(kernel_size, self.ndim, 'kernel_size')
        self.dilation = to_tuple(dilation, self.ndim, 'dilation')
        self.stride = to_tuple(stride, self.ndim, 'stride')
        self.is_causal = to_tuple(is_causal, self.ndim, 'is_causal', bool)
        self.window_size = tuple(k * d for k, d in zip(self.kernel_size, self.dilation))
        self.backend = backend

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if bias if rel_pos_bias is None else rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, *(2 * k - 1 for k in self.kernel_size)))
            trunc_normal_(self.rpb, std=.02, mean=0., a=-2., b=2.)
        else:
            self.register_parameter('rpb', None)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != self.ndim + 2:
            raise ValueError(f'{type(self).__name__} expects [batch, *spatial ({self.ndim} dims), channels], got '
                             f'shape {tuple(x.shape)}')
        shape = tuple(int(n) for n in x.shape[1:-1])  # plain ints also under jit tracing (fvcore)
        pad = [max(0, w - n) for w, n in zip(self.window_size, shape)]
        if any(pad):
            x = F.pad(x, [0, 0] + [p for n in reversed(pad) for p in (0, n)])
        b, c = x.shape[0], x.shape[-1]
        q, k, v = self.qkv(x).reshape(b, *x.shape[1:-1], 3, self.num_heads, self.head_dim).unbind(-3)
        x = neighborhood_attention(
            self.ndim, q, k, v, self.kernel_size, self.stride, self.dilation, self.is_causal, self.scale, self.rpb,
            backend=self.backend, dropout_p=self.attn_drop if self.training else 0.)
        x = x.reshape(b, *x.shape[1:-2], c)
        if any(pad):
            x = x[(slice(None), *(slice(0, n) for n in shape))]
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, '
                f'dilation={self.dilation}, stride={self.stride}, is_causal={self.is_causal}, '
                f'rel_pos_bias={self.rpb is not None}, attn_drop={self.attn_drop}')


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, length, channels]``."""

    ndim = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, height, width, channels]``."""

    ndim = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """Neighborhood attention over ``[batch, depth, height, width, channels]``."""

    ndim = 3
