"""The CSWin skeleton shared by Agent-CSWin and InLine-CSWin: cross-shaped stripes with LePE, the attention per block.

CSWin Transformer (Dong et al., CVPR 2022; https://github.com/microsoft/CSWin-Transformer), as the Agent-Attention
(``agent_transformer/models/agent_cswin.py``) and InLine (``models/inline_cswin.py``) code modify it:

* stem: 7x7 stride-4 conv, LayerNorm; between stages a 3x3 stride-2 conv and LayerNorm (the official ``Merge_Block``);
* block: ``x + proj(attn(qkv(norm1(x))))``, then ``x + mlp(norm2(x))`` (stochastic depth on both). The ``qkv``
  output is split channel-wise into two branches of half the width and heads: vertical stripes ``(H, sw)`` and
  horizontal stripes ``(sw, W)``; a block whose stage resolution equals its split (or in the last stage) has one
  full-width branch over the whole map. Each branch adds LePE (a depthwise 3x3 conv of ``v`` inside its window);
* the attention kind per block (``attn_kinds``, :mod:`backbones._attn_kinds`; the official ``ATTN_TYPE`` codes
  ``AABB`` / ``IISS`` / ``M<n>`` become them through the family's letters): ``'stripe'`` CSWin's softmax stripe
  attention (:class:`LePEStripeAttention`, :func:`ops.window_attention` with the stripe as a non-square window);
  ``'agent'`` and ``'inline'`` attention, whose blocks use the ``la_split_size`` stripe (the whole map in every
  released model, so they run as one global branch).

Any input size (the official models assert their build resolution): a branch's window is taken from the actual map
(``(H, sw)`` / ``(sw, W)`` / ``(H, W)``). Stripes that do not divide the map are zero-padded on q, k and v, centred,
as the official CSWin segmentation backbone does (the padded keys stay unmasked there; here too), and cropped after;
``mask_stripe_padding=True`` pads at the end and masks the padded keys instead.

torch.export / ONNX (dynamic batch, height and width; eager code is unchanged): the stripe is size-derived there
(the whole map on one axis), so compiled stripe attention is :func:`ops.dense_attention` per stripe (the window op's
ONNX lowering takes fixed windows); the stripe padding and its crop happen at every size (by 0 where nothing is
needed), and an axis with a single stripe gets a second, all-padding one, so the stripe count is >= 2 at every size
(torch.export would otherwise specialise on it being 1 or not). The partitions merge the stripe index into the batch
at once, never a dim of the stripe count alone, for the same reason.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, register_notrace_module
from torch.fx.experimental.symbolic_shapes import statically_known_true

import ops

from ._agent_inline import AGENT_BIAS_RESIZE, AgentBiases, inline_parts, inline_residual, pool_agents
from ._attn_kinds import check_attn_kinds, kind_kwargs
from ._hierarchical import HierarchicalModel, Stage, check_image, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['ATTENTIONS', 'AgentStripeAttention', 'CSWin', 'CSWinBlock', 'InLineStripeAttention', 'LePEStripeAttention',
           'stripe_window', 'window_conv']

def window_conv(x: torch.Tensor, conv: nn.Module, window: tuple[int, int]) -> torch.Tensor:
    """``conv`` on each ``window`` of an NHWC map separately (zero padding at window borders), NHWC out; compiled,
    the windows are stripes spanning the map's height or width (:func:`_windows`)."""
    b, h, w, c = x.shape
    wh, ww = window
    # exported: the whole-map shortcut only where it holds at every size (no guard on the stripe count)
    if statically_known_true(wh == h) and statically_known_true(ww == w):
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    if torch.compiler.is_compiling():  # the stripes merged with the batch at once (see _windows)
        x = conv(_windows(x, window, 1).flatten(3).permute(0, 3, 1, 2))
        return _merge_windows(x.permute(0, 2, 3, 1), b, h, w)
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4).reshape(-1, c, wh, ww)
    x = conv(x)
    return x.reshape(b, h // wh, w // ww, c, wh, ww).permute(0, 1, 4, 2, 5, 3).reshape(b, h, w, c)


def stripe_window(idx: int, split_size: int, h: int, w: int) -> tuple[int, int]:
    """The window of a branch on an ``h x w`` map: ``idx`` -1 the whole map, 0 vertical stripes ``(h, split)``,
    1 horizontal stripes ``(split, w)`` (the official ``H_sp, W_sp``)."""
    return {-1: (h, w), 0: (h, split_size), 1: (split_size, w)}[idx]


def _stripe_pad(n, stripe) -> tuple[int, int]:
    """``(pad, extra)`` for an axis of length ``n`` cut into stripes: ``pad`` to a multiple of the stripe (the ceil
    form keeps the padded length a visible multiple under torch.export), and, compiled, one more stripe of padding
    where the axis has a single stripe. So the stripe count is >= 2 at every size: torch.export would otherwise guard
    on it being 1 (the reshapes branch on it) and the program would fail at the sizes with a single stripe. The extra
    stripe is padding only: its queries are cropped and its keys are in no real token's stripe."""
    count = (n + stripe - 1) // stripe
    extra = (torch.sym_max(count, 2) - count) * stripe if torch.compiler.is_compiling() else 0
    return count * stripe - n, extra


def _end_padded(x: torch.Tensor, idx: int, window: tuple[int, int]) -> torch.Tensor:
    """NHWC ``x`` zero-padded at the end of its striped axis (``idx`` as :func:`stripe_window`) by
    :func:`_stripe_pad`'s ``pad + extra``, for compiled code (eager: :func:`ops.pad_to_multiple`)."""
    if idx == -1:
        return x
    pad, extra = _stripe_pad(x.shape[2 - idx], window[1 - idx])
    return F.pad(x, (0, 0, 0, pad + extra) if idx == 0 else (0, 0, 0, 0, 0, pad + extra))


class StripeBranch(nn.Module):
    """What every CSWin branch shares: its window rule, the centred zero padding, and LePE (``get_v``, a depthwise
    3x3 conv of v inside each window). Subclasses call :meth:`_init_branch` and define :meth:`attend`.

    ``idx`` as :func:`stripe_window`; ``resolution``: the stage's map side at the build size.
    """

    uses_input_mean = False  # True: forward takes ``x_mean``, the block input's mean token (InLine's residual)

    def _init_branch(self, dim: int, num_heads: int, idx: int, split_size: int, resolution: int, dd: dict) -> None:
        if idx not in (-1, 0, 1):
            raise ValueError(f'idx must be -1 (whole map), 0 (vertical) or 1 (horizontal stripes), got {idx}')
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.idx, self.split_size, self.resolution = idx, split_size, resolution
        self.scale = self.head_dim ** -0.5
        self.get_v = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **dd)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: tuple[int, int],
               **kwargs: torch.Tensor) -> torch.Tensor:
        """The branch's attention on NHWC q, k, v whose sizes are multiples of ``window`` (LePE excluded)."""
        raise NotImplementedError

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = q.shape
        wh, ww = stripe_window(self.idx, self.split_size, h, w)
        # only the striped axis pads (idx 0 splits the width, 1 the height); compiled, an extra stripe where the axis
        # has one (after the centred padding: no real token changes stripe)
        ph, eh = _stripe_pad(h, wh) if self.idx == 1 else (0, 0)
        pw, ew = _stripe_pad(w, ww) if self.idx == 0 else (0, 0)
        compiling = torch.compiler.is_compiling()  # compiled: pad and crop at every size (padding by 0 is a no-op)
        if compiling or ph or pw:  # the official segmentation backbone's centred padding
            pad = (0, 0, pw // 2, pw - pw // 2 + ew, ph // 2, ph - ph // 2 + eh)
            q, k, v = (F.pad(t, pad) for t in (q, k, v))
        grid = ops.TokenGrid((h, w), (-(ph // 2), -(pw // 2)))  # where the padded map's tokens lie (attention maps)
        out = self.attend(q, k, v, (wh, ww), token_grid=grid, **kwargs) + window_conv(v, self.get_v, (wh, ww))
        if compiling:  # the centred crop as negative padding: a fresh tensor, no guard on the view's strides
            return F.pad(out, [-p for p in pad])
        if ph or pw:
            out = out[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        return out

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, idx={self.idx}, split_size={self.split_size}'


def _stripe_axis(h, w, window: tuple[int, int]) -> int:
    """1 (the stripes are rows of windows: ``(wh, W)``, or the whole map) or 2 (columns: ``(H, ww)``)."""
    if statically_known_true(window[1] == w):
        return 1
    if statically_known_true(window[0] == h):
        return 2
    raise ValueError(f'a CSWin window spans the height or the width of the map, got window {tuple(window)} on a '
                     f'{h}x{w} map')


# The window index is merged with the batch at once (never a dim of its own): under torch.export a dim of the stripe
# count alone makes a guard on it being 1, and the program then fails at sizes with a single stripe.
def _windows(x: torch.Tensor, window: tuple[int, int], heads: int) -> torch.Tensor:
    """NHWC ``[B, H, W, C]`` -> ``[B * windows, wh, ww, heads, C / heads]`` (stripes in order per image); the
    windows span the height or the width (:func:`_stripe_axis`)."""
    b, h, w, c = x.shape
    wh, ww = window
    if _stripe_axis(h, w, window) == 1:
        return x.reshape(-1, wh, w, heads, c // heads)
    return x.transpose(1, 2).reshape(-1, ww, h, heads, c // heads).transpose(1, 2).contiguous()


def _merge_windows(x: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """``[B * windows, wh, ww, C]`` -> NHWC ``[B, H, W, C]`` (the inverse of :func:`_windows`)."""
    _, wh, ww, c = x.shape
    if _stripe_axis(h, w, (wh, ww)) == 1:
        return x.reshape(b, h, w, c)
    return x.transpose(1, 2).reshape(b, w, h, c).transpose(1, 2).contiguous()


class LePEStripeAttention(StripeBranch):
    """CSWin's softmax attention in each stripe (the official ``LePEAttention``), on :func:`ops.window_attention`.

    ``mask_padding``: where the stripes do not divide the map, pad at the end and mask the padded keys (every query
    sees only real tokens), instead of the official centred zero padding whose zero keys stay in the softmax.
    """

    def __init__(self, dim: int, num_heads: int, idx: int, split_size: int, resolution: int, attn_drop: float = 0.,
                 mask_padding: bool = False, device=None, dtype=None):
        super().__init__()
        self._init_branch(dim, num_heads, idx, split_size, resolution, {'device': device, 'dtype': dtype})
        self.attn_drop, self.mask_padding = attn_drop, mask_padding

    def attend(self, q, k, v, window, token_grid=None, **kwargs):
        if torch.compiler.is_compiling():
            return self._attend_exported(q, k, v, window)
        b, h, w, c = q.shape
        q, k, v = (t.reshape(b, h, w, self.num_heads, self.head_dim) for t in (q, k, v))
        padding = 'masked' if self.mask_padding else 'zeros'  # 'zeros': the official (centred by the caller)
        out = ops.window_attention(q, k, v, window, scale=self.scale, padding=padding,
                                   dropout_p=self.attn_drop if self.training else 0., token_grid=token_grid)
        return out.reshape(b, h, w, c)

    def _attend_exported(self, q, k, v, window):
        """:meth:`attend` as dense attention in each window (:func:`ops.dense_attention`), for torch.export: the
        stripe is size-derived there, and the window op's ONNX lowering takes fixed windows only. The same attention:
        ``'zeros'`` gets maps the caller padded (zero keys in the softmax); ``mask_padding`` pads the striped axis at
        the end here and masks the padded keys (-inf)."""
        b, h, w, c = q.shape
        masked = self.mask_padding and self.idx != -1  # the whole map has no padding to mask
        if masked:
            q, k, v = (_end_padded(t, self.idx, window) for t in (q, k, v))
        hp, wp = q.shape[1:3]
        bias = None
        if masked:  # per window, the same in every image
            keep = (torch.arange(hp, device=q.device) < h)[:, None] & (torch.arange(wp, device=q.device) < w)
            keep = _windows(keep[None, :, :, None], window, 1).flatten(1)  # [windows, wh * ww]
            bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, float('-inf'))
            bias = bias.repeat(b, 1)[:, None, None]  # [B * windows, 1, 1, wh * ww]
        q, k, v = (_windows(t, window, self.num_heads).flatten(1, 2) for t in (q, k, v))
        out = ops.dense_attention(q, k, v, bias, scale=self.scale, dropout_p=self.attn_drop if self.training else 0.)
        out = _merge_windows(out.reshape(-1, *window, c), b, hp, wp)
        return ops.crop(out, (h, w), (1, 2)) if masked else out

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        if not self.mask_padding:
            return super().forward(q, k, v)
        window = stripe_window(self.idx, self.split_size, q.shape[1], q.shape[2])
        if torch.compiler.is_compiling():
            padded, size = _end_padded(v, self.idx, window), (v.shape[1], v.shape[2])
        else:
            padded, size = ops.pad_to_multiple(v, window, (1, 2))  # LePE inside the (end-padded) stripes
        lepe = ops.crop(window_conv(padded, self.get_v, window), size, (1, 2))
        return self.attend(q, k, v, window) + lepe  # window_attention pads, masks and crops itself

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, mask_padding={self.mask_padding}'


class AgentStripeAttention(AgentBiases, StripeBranch):
    """Agent attention in each window (Agent-CSWin's ``AgentAttention``): the shared biases
    (:class:`~backbones._agent_inline.AgentBiases`, sized to the build window and resized to any other) and
    :func:`ops.agent_attention`; CSWin's LePE is its depthwise-conv term.

    ``agent_shape``: the agent grid at run time (default: the build one), as in
    :class:`~backbones._agent_inline.AgentAttention`.
    """

    def __init__(self, dim: int, num_heads: int, idx: int, split_size: int, resolution: int, agent_num: int = 49,
                 attn_drop: float = 0., agent_shape: Sequence[int] | None = None, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__(num_heads, agent_num, stripe_window(idx, split_size, resolution, resolution), **dd)
        self._init_branch(dim, num_heads, idx, split_size, resolution, dd)
        self.attn_drop = attn_drop
        self.agent_shape = None if agent_shape is None else tuple(agent_shape)

    def attend(self, q, k, v, window, **kwargs):
        b, h, w, c = q.shape
        q, k, v = (_windows(t, window, self.num_heads) for t in (q, k, v))
        agent_shape = self.agent_shape or self.grid
        agents = pool_agents(q, agent_shape)
        bias1, bias2 = self.biases(window, agent_shape=agent_shape)
        out = ops.agent_attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), agents, bias1, bias2,
                                  scale=self.scale, dropout_p=self.attn_drop if self.training else 0.,
                                  token_grid=window)
        return _merge_windows(out.reshape(-1, *window, c), b, h, w)

    def extra_repr(self) -> str:
        return f'{StripeBranch.extra_repr(self)}, agent_num={self.agent_num}, build_window={self.query_size}'


class InLineStripeAttention(StripeBranch):
    """InLine attention in each window (InLine-CSWin's ``InLineAttention``): :func:`ops.linear_attention` with
    ``normalizer='inline'`` plus the dynamic 3x3 residual whose kernels ``residual`` makes from the block input's
    mean token (:func:`~backbones._agent_inline.inline_residual`; the windows of an image share them), and LePE.

    ``kernel_func``: the feature map phi (``INLINE_KERNELS``; official ``'identity'``). ``attn_drop`` is unused (no
    attention matrix), as in the official module.
    """

    uses_input_mean = True

    def __init__(self, dim: int, num_heads: int, idx: int, split_size: int, resolution: int,
                 kernel_func: str = 'identity', attn_drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self._init_branch(dim, num_heads, idx, split_size, resolution, dd)
        self.kernel_func, self.residual = inline_parts(dim, num_heads, kernel_func, dd)

    def attend(self, q, k, v, window, x_mean=None, **kwargs):
        b, h, w, c = q.shape
        q, k, v = (_windows(t, window, self.num_heads) for t in (q, k, v))
        out = ops.linear_attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), feature_map=self.kernel_func,
                                   normalizer='inline', scale=self.scale, token_grid=window).reshape(-1, *window, c)
        out = out + inline_residual(self.residual, x_mean, v.flatten(3).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return _merge_windows(out, b, h, w)


BranchFactory = Callable[..., StripeBranch]
ATTENTIONS: dict[str, BranchFactory] = dict(stripe=LePEStripeAttention, agent=AgentStripeAttention,
                                            inline=InLineStripeAttention)  # CSWin.KINDS, CSWin's own first


@register_notrace_module  # torch.fx: a leaf (chunked branches zipped per head group)
class CSWinBlock(nn.Module):
    """Pre-norm block with two stripe attention branches over halves of the channels and heads, or one over the whole
    map where the stage's build ``resolution`` equals ``split_size`` or in the ``last_stage`` (the official rule)."""

    def __init__(self, dim: int, num_heads: int, branch: BranchFactory, split_size: int, resolution: int,
                 last_stage: bool = False, mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0.,
                 drop_path: float = 0., device=None, dtype=None, **attn_kwargs: Any):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        if resolution == split_size or last_stage:
            self.attns = nn.ModuleList([branch(dim, num_heads, -1, split_size, resolution, **attn_kwargs, **dd)])
        else:
            if num_heads % 2 or dim % 2:
                raise ValueError(f'stripe blocks split dim and heads in two, got dim {dim}, {num_heads} heads')
            self.attns = nn.ModuleList([branch(dim // 2, num_heads // 2, i, split_size, resolution, **attn_kwargs,
                                               **dd) for i in range(2)])
        self.proj = nn.Linear(dim, dim, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` NHWC."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        n = len(self.attns)
        # InLine's dynamic residual reads the mean of the block input (before norm1), as the official block passes it
        means = x.mean(dim=(1, 2)).chunk(n, dim=-1)
        outs = [attn(qi, ki, vi, x_mean=m) if getattr(attn, 'uses_input_mean', False) else attn(qi, ki, vi)
                for attn, qi, ki, vi, m in zip(self.attns, q.chunk(n, -1), k.chunk(n, -1), v.chunk(n, -1), means)]
        x = x + self.drop_path(self.proj(torch.cat(outs, dim=-1) if n > 1 else outs[0]))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Downsample(nn.Module):
    """3x3 stride-2 conv and LayerNorm (the official ``Merge_Block``), NCHW."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1, device=device, dtype=dtype)
        self.norm = LayerNorm2d(out_dim, eps=1e-5, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Stem(nn.Module):
    """7x7 stride-4 conv and LayerNorm (the official ``stage1_conv_embed``), NCHW."""

    def __init__(self, in_chans: int, embed_dim: int, device=None, dtype=None):
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, 7, 4, 2, device=device, dtype=dtype)
        self.norm = LayerNorm2d(embed_dim, eps=1e-5, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans, 3, 'the 7x7 stride-4 stem')
        return self.norm(self.proj(x))


class CSWin(HierarchicalModel):
    """CSWin with a choice of attention per block.

    Args:
        attn_kinds: per stage, the kind of each block (see the module docstring); ``None``: ``'stripe'`` everywhere
            (CSWin).
        attentions: kind -> branch class (a :class:`StripeBranch`) over :data:`ATTENTIONS` (``'stripe'``
            :class:`LePEStripeAttention`, ``'agent'`` :class:`AgentStripeAttention`, ``'inline'``
            :class:`InLineStripeAttention`).
        img_size: the build resolution: it decides which blocks are one global branch (stage resolution == split)
            and sizes the resolution-dependent parameters of the linear attentions; any input size runs.
        split_size: stripe width per stage of the ``'stripe'`` blocks.
        la_split_size: stripe width per stage of the other blocks (the official ``CSWIN_LA_SPLIT_SIZE``; default the
            stage maps).
        attn_kwargs: per kind, extra keyword arguments for its branch class, each a value or a per-stage tuple
            (e.g. ``{'agent': {'agent_num': (9, 16, 49, 49)}}``).
        embed_dim, depths, num_heads, mlp_ratio, qkv_bias: widths and blocks (width doubles per stage).
        mask_stripe_padding: stripes that do not divide the map: end-pad and mask the padded keys (the correct
            behaviour) instead of the official segmentation backbone's centred, unmasked zero padding (the default).
        drop_rate, attn_drop_rate, drop_path_rate: dropout in the MLP / attention, stochastic depth (linear over
            all blocks); ``head_drop_rate``: before the classifier (the base's ``drop_rate``).
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``device``, ``dtype``
            (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    KINDS = tuple(ATTENTIONS)
    # The official layout: ``stage1_conv_embed``, ``stage{i}.{j}`` blocks (from 1), ``merge{i}`` in front of stage i;
    # agent biases of another build window resized.
    checkpoint_layout = Layout(
        name='CSWin', marker=r'\.attns\.0\.get_v\.weight$', summary=stage_summary('norm1.weight'),
        renames=(('stage1_conv_embed.0.', 'patch_embed.proj.'), ('stage1_conv_embed.2.', 'patch_embed.norm.'),
                 ('stage{i}.{j}.', 'stages.{i-1}.blocks.{j}.'), ('merge{i}.', 'stages.{i}.downsample.'), *HEAD_FC),
        resize=AGENT_BIAS_RESIZE)

    def __init__(
            self,
            img_size: int = 224,
            embed_dim: int = 64,
            depths: Sequence[int] = (2, 4, 18, 1),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            split_size: Sequence[int] = (1, 2, 7, 7),
            la_split_size: Sequence[int] | None = None,
            attn_kinds: Sequence[Sequence[str]] | None = None,
            attentions: Mapping[str, BranchFactory] | None = None,
            attn_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            mask_stripe_padding: bool = False,
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            head_drop_rate: float = 0.,
            **kwargs: Any,
    ):
        super().__init__(drop_rate=head_drop_rate, **kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, num_heads=num_heads, split_size=split_size, attn_kinds=attn_kinds)
        resolutions = [img_size // (4 * 2 ** i) for i in range(n)]
        la_split_size = tuple(la_split_size or resolutions)
        attentions = {**ATTENTIONS, **(attentions or {})}
        self.attn_kinds = check_attn_kinds(attn_kinds, depths, tuple(attentions))
        self.img_size = img_size
        self.patch_embed = Stem(self.in_chans, embed_dim, **dd)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        stages, dims, j = [], [embed_dim * 2 ** i for i in range(n)], 0
        for i in range(n):
            blocks = []
            for kind in self.attn_kinds[i]:
                split = split_size[i] if kind == 'stripe' else la_split_size[i]
                extra = kind_kwargs(attn_kwargs, kind, i)
                extra.setdefault('attn_drop', attn_drop_rate)
                if kind == 'stripe':
                    extra.setdefault('mask_padding', mask_stripe_padding)
                blocks.append(CSWinBlock(
                    dims[i], num_heads[i], attentions[kind], split, resolutions[i], i == n - 1, mlp_ratio, qkv_bias,
                    drop_rate, dpr[j], **dd, **extra))
                j += 1
            stages.append(Stage(Downsample(dims[i - 1], dims[i], **dd) if i else None, blocks))
        self._set_stages(stages, dims)
        self._set_head(dims[-1], LayerNorm2d(dims[-1], eps=1e-5, **dd))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the official init: truncated-normal Linear weights, zero biases, unit LayerNorms; convs keep torch's init
        if not trunc_normal_init(m) and isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

