"""``NeighborhoodAttention1D/2D/3D``: drop-in replacements for NATTEN's (<= 0.17) and NAT's attention modules;
``WindowAttention1D/2D/3D``: Swin's W-MSA with timm's parameter layout and a choice of padding.

Same submodules and parameters as NATTEN's (``qkv``, ``proj``, ``rpb`` ``[heads, 2k-1, ...]``), so NAT/DiNAT
checkpoints load unchanged. Inputs smaller than ``kernel_size * dilation`` on some axis are zero-padded at the end
before ``qkv`` and the output cropped, as NATTEN 0.14's modules did (the padded tokens are ordinary keys).

Attention dropout (``attn_drop > 0`` in training) runs where a backend declares it: fused in the ``triton``
kernels (Philox masks regenerated in the backward) and on the ``torch`` backend's autograd path (per-tile
probabilities kept for backward; memory linear in tokens); a module pinned to a backend without it (``reference``)
raises. NATTEN's fused kernels silently ignored it. The window modules follow the same rule.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from .._checks import spatial_sizes
from .._shape import crop, pad_to_multiple
from ..maps import _recorder
from .api import neighborhood_attention
from .partition import PADDINGS, window_attention
from .pattern import BoolOrTuple, IntOrTuple, to_tuple

__all__ = ['NeighborhoodAttention1D', 'NeighborhoodAttention2D', 'NeighborhoodAttention3D',
           'WindowAttention1D', 'WindowAttention2D', 'WindowAttention3D']


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
            device=None,
            dtype=None,
    ):
        """``rel_pos_bias`` (NATTEN >= 0.15's name) overrides ``bias`` (NATTEN 0.14's) when given; ``device`` /
        ``dtype`` are the parameters' factory kwargs (timm's)."""
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
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

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        if bias if rel_pos_bias is None else rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, *(2 * k - 1 for k in self.kernel_size), **dd))
            trunc_normal_(self.rpb, std=.02, mean=0., a=-2., b=2.)
        else:
            self.register_parameter('rpb', None)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        """``x [batch, *spatial, channels]``."""
        if x.dim() != self.ndim + 2:
            raise ValueError(f'{type(self).__name__} expects [batch, *spatial ({self.ndim} dims), channels], got '
                             f'shape {tuple(x.shape)}')
        shape = tuple(x.shape[1:-1])
        if torch.jit.is_tracing():  # plain ints under jit tracing (fvcore); symbolic sizes stay so under torch.export
            shape = tuple(int(n) for n in shape)
        pad = [torch.sym_max(0, w - n) for w, n in zip(self.window_size, shape)]
        padded = torch.compiler.is_compiling() or any(pad)  # compiled: both cases in one graph, no guard on the size
        if padded:
            x = F.pad(x, [0, 0] + [p for n in reversed(pad) for p in (0, n)])
        b, c = x.shape[0], x.shape[-1]
        q, k, v = self.qkv(x).reshape(b, *x.shape[1:-1], 3, self.num_heads, self.head_dim).unbind(-3)
        x = neighborhood_attention(
            self.ndim, q, k, v, self.kernel_size, self.stride, self.dilation, self.is_causal, self.scale, self.rpb,
            backend=self.backend, dropout_p=self.attn_drop if self.training else 0., token_grid=shape)
        x = x.reshape(b, *x.shape[1:-2], c)
        if padded:
            x = crop(x, shape, range(1, self.ndim + 1))
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


_WINDOW_PADDINGS = ('tokens', *PADDINGS)  # the functional ones, and Swin's padding of the tokens before qkv


class _WindowAttention(nn.Module):
    ndim: int

    def __init__(
            self,
            dim: int,
            num_heads: int,
            window_size: IntOrTuple,
            shift_size: IntOrTuple = 0,
            head_dim: int | None = None,
            qkv_bias: bool = True,
            qk_scale: float | None = None,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            padding: str = 'tokens',
            rel_pos_bias: bool = True,
            backend: str | None = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if padding not in _WINDOW_PADDINGS:
            raise ValueError(f'padding must be one of {_WINDOW_PADDINGS}, got {padding!r}')
        if num_heads < 1 or (head_dim is None and dim % num_heads):
            raise ValueError(f'dim ({dim}) must be a positive multiple of num_heads ({num_heads}) unless head_dim '
                             f'is given')
        if not 0 <= attn_drop < 1:
            raise ValueError(f'attn_drop must be in [0, 1), got {attn_drop}')
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.window_size = to_tuple(window_size, self.ndim, 'window_size')
        self.shift_size = to_tuple(shift_size, self.ndim, 'shift_size')
        if any(not 0 <= s < w for s, w in zip(self.shift_size, self.window_size)):
            raise ValueError(f'shift_size must be in [0, window_size) per axis, got {shift_size!r} for window_size '
                             f'{self.window_size}')
        if any(self.shift_size) and padding == 'clamp':
            raise ValueError("shifted windows need padding 'tokens', 'zeros' or 'masked', not 'clamp'")
        self.padding = padding
        self.backend = backend
        attn_dim = self.num_heads * self.head_dim
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias, **dd)
        if rel_pos_bias:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(math.prod(2 * w - 1 for w in self.window_size), num_heads, **dd))
            trunc_normal_(self.relative_position_bias_table, std=.02)
        else:
            self.register_parameter('relative_position_bias_table', None)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(attn_dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> Tensor | None:
        """The table as the op's ``rpb``: ``[heads, 2w-1, ...]`` indexed ``key - query``, i.e. Swin's (row-major
        over ``query - key``) reshaped and flipped on every spatial axis."""
        table = self.relative_position_bias_table
        if table is None:
            return None
        table = table.t().reshape(self.num_heads, *(2 * w - 1 for w in self.window_size))
        return table.flip(tuple(range(1, self.ndim + 1)))

    def forward(self, x: Tensor, shift: bool = True) -> Tensor:
        """``x [batch, *spatial, channels]``; ``shift=False`` skips this module's shift for the call (Swin shifts no
        window on a map no larger than the window; the caller decides, as the map size is known only here). A
        ``torch.SymBool`` (the rule on symbolic sizes, exported) computes both forms and picks one at run time."""
        if x.dim() != self.ndim + 2:
            raise ValueError(f'{type(self).__name__} expects [batch, *spatial ({self.ndim} dims), channels], got '
                             f'shape {tuple(x.shape)}')
        shape = spatial_sizes(x, range(1, self.ndim + 1))
        if self.padding == 'tokens':
            x, _ = pad_to_multiple(x, self.window_size, range(1, self.ndim + 1))
        b = x.shape[0]
        q, k, v = self.qkv(x).reshape(b, *x.shape[1:-1], 3, self.num_heads, self.head_dim).unbind(-3)
        kwargs = dict(scale=self.scale, rpb=self.relative_position_bias(), backend=self.backend,
                      dropout_p=self.attn_drop if self.training else 0., token_grid=shape)
        shift = any(self.shift_size) and shift
        sized = isinstance(shift, torch.SymBool)  # decided by a symbolic map size (exported with dynamic sizes)
        if (sized or shift) and self.padding == 'zeros':  # padded keys unmasked: pad here (slabs mask their own)
            q, k, v = (pad_to_multiple(t, self.window_size, range(1, self.ndim + 1))[0] for t in (q, k, v))
        padding = 'zeros' if self.padding == 'tokens' else self.padding  # 'tokens': q/k/v are multiples already
        if sized:  # both forms in the graph, picked at run time: no guard on the map size
            x = torch.where(torch.full((), shift, dtype=torch.bool, device=q.device), self._shifted(q, k, v, 0, kwargs),
                            window_attention(q, k, v, self.window_size, padding=padding, **kwargs))
        elif shift:
            x = self._shifted(q, k, v, 0, kwargs)
        else:
            x = window_attention(q, k, v, self.window_size, padding=padding, **kwargs)
        x = crop(x.reshape(b, *x.shape[1:-2], self.num_heads * self.head_dim), shape, range(1, self.ndim + 1))
        return self.proj_drop(self.proj(x))

    def _shifted(self, q: Tensor, k: Tensor, v: Tensor, axis: int, kwargs: dict, origin: tuple = ()) -> Tensor:
        """SW-MSA without the roll. Along an axis shifted by ``s``, Swin's masked regions of the rolled map are,
        back in map coordinates, ``[0, s)`` and windows starting at ``s``: attend in those two slabs separately, each
        padded to a multiple of the window with its padding masked (it stands for the other regions' keys)."""
        if axis == self.ndim:
            if _recorder.active is not None:  # where this slab lies on the map
                kwargs = {**kwargs, 'token_grid': _recorder.TokenGrid(kwargs['token_grid'], origin)}
            return window_attention(q, k, v, self.window_size, padding='masked', **kwargs)
        n, s = q.shape[axis + 1], min(self.shift_size[axis], q.shape[axis + 1])
        slabs = [(0, s), (s, n - s)] if s else [(0, n)]
        return torch.cat([self._shifted(*(t.narrow(axis + 1, a, m) for t in (q, k, v)), axis + 1, kwargs,
                                        origin + (a,)) for a, m in slabs if m], axis + 1)

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, num_heads={self.num_heads}, window_size={self.window_size}, '
                f'shift_size={self.shift_size}, padding={self.padding!r}, '
                f'rel_pos_bias={self.relative_position_bias_table is not None}, attn_drop={self.attn_drop}')


_WINDOW_DOC = """Swin window attention (W-MSA) over ``[batch, {spatial}, channels]``: every token attends to its
    non-overlapping ``window_size`` block, through :func:`ops.window_attention`.

    Parameters as timm's ``swin_transformer.WindowAttention`` (and Swin's official ``WindowAttention``, Video Swin's
    in 3-D): ``qkv``, ``proj``, ``relative_position_bias_table`` ``[prod(2w-1), heads]`` indexed ``query - key``
    (row-major), so their state dicts load unchanged (the official ``relative_position_index`` buffer is derived:
    drop it). Maps that are not a multiple of the window, by ``padding``:

    * ``'tokens'`` (default; Swin, Video Swin and the Swin-based Agent/InLine/L2ViT code): zero-pad the input tokens
      before ``qkv`` and crop after; padded keys carry the projection bias and the rel-pos bias and take part in the
      softmax, unmasked. Pass the normalised tokens, as Swin's block does.
    * ``'zeros'``: zero-pad q/k/v after ``qkv``, unmasked (padded keys: logit = rel-pos bias, value 0); equals
      ``'tokens'`` only when ``qkv_bias=False``.
    * ``'masked'``: zero-pad q/k/v and mask the padded keys, so every query sees only real tokens (the correct
      behaviour; our any-size MaxViT's).
    * ``'clamp'`` (NATTEN): no padding, the last window is clamped inwards and overlaps the previous one; every
      axis must be at least the window.

    ``shift_size`` > 0 (per axis, < window): Swin's shifted windows (SW-MSA) as the official Swin detection /
    segmentation and Video Swin code computes them at any size: pad (by ``padding``), roll by ``-shift``, window
    attention with the region mask, roll back, crop. Computed without the roll, one op call per region slab (up to
    ``2 ** ndim``); Swin's additive -100 becomes an exact mask (exp(-100) is below float precision). timm rolls
    before padding, which differs at non-divisible sizes (wrapped tokens share windows unmasked); at divisible
    sizes all agree. ``'masked'`` sees only real tokens of each region; ``'clamp'`` has no shifted form.
    """


class WindowAttention1D(_WindowAttention):
    __doc__ = _WINDOW_DOC.format(spatial='length')
    ndim = 1


class WindowAttention2D(_WindowAttention):
    __doc__ = _WINDOW_DOC.format(spatial='height, width')
    ndim = 2


class WindowAttention3D(_WindowAttention):
    __doc__ = _WINDOW_DOC.format(spatial='depth, height, width')
    ndim = 3
