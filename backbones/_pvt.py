"""The PVT-v1 skeleton with the attention chosen per stage, shared by Agent-PVT and InLine-PVT.

PVT (Wang et al., ICCV 2021) as the Agent / InLine repositories build it: per stage a patch embedding (4x4 conv for
stage 1, 2x2 after; LayerNorm), a learned position embedding sized to the build grid, and pre-norm blocks
(attention, then an MLP; LayerNorm eps 1e-6); no class token and no final norm: the head averages the last map.
A stage's attention is one of

* ``'sra'`` — PVT's spatial-reduction attention (keys / values from the map reduced by an ``sr x sr`` stride conv +
  LayerNorm; the official ``B`` / ``S`` stages), through :func:`ops.dense_attention`;
* ``'agent'`` — agent attention over the whole map (``A``; :class:`backbones._agent_inline.AgentAttention`);
* ``'inline'`` — InLine attention over the whole map (``I``; :class:`backbones._agent_inline.InLineAttention`).

The official A / I stages use spatial reduction 1 (``PVT_LA_SR_RATIOS = 1111``: the released models, and the only
value the official downstream agent code accepts), which is what is built here.

Any input size: each patch embedding drops a remainder row / column (a stride conv without padding, as the official
code), the position embeddings are resized bilinearly to the map (the official rule; identity at the build size),
and the agent biases are resized as the official downstream backbones do (:mod:`backbones._agent_inline`). The
official ``_get_pos_embed`` compares a stage's token count with stage 1's build count, which crashes or mislays the
embedding at some sizes (e.g. stage 2 of a 448 input); here a stage compares its own grid. Layout: stage 1's patch
embedding is ``patch_embed``, the others ``stages.{i}.downsample``; ``pos_embed{i+1}`` -> ``stages.{i}.pos_embed``;
``block{i+1}`` -> ``stages.{i}.blocks``; ``head`` -> ``head.fc`` (``PVT.checkpoint_layout``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import (
    DropPath,
    LayerNorm2d,
    Mlp,
    calculate_drop_path_rates,
    register_notrace_module,
    trunc_normal_,
)
from timm.models import checkpoint_seq
from torch import nn

import ops

from ._agent_inline import AGENT_BIAS_RESIZE, AgentAttention, InLineAttention, attention_summary
from ._attn_kinds import check_attn_kinds
from ._hierarchical import HierarchicalModel, check_image, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout

__all__ = ['PVT', 'PVTBlock', 'SpatialReductionAttention', 'PVT_KINDS']

PVT_KINDS = ('sra', 'agent', 'inline')
_LN_EPS = 1e-6  # the blocks' norm_layer; the patch embeddings' and SRA's norms keep nn.LayerNorm's 1e-5
_MIN_SIZE = 32  # a 4x4 then three 2x2 stride convs without padding


class SpatialReductionAttention(nn.Module):
    """PVT's attention on an NHWC map: queries from every token, keys / values from the map reduced by ``sr``
    (a stride-``sr`` conv and a LayerNorm; none for ``sr = 1``). Parameters ``q``, ``kv``, ``proj``, ``sr``,
    ``norm``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.num_heads, self.head_dim, self.sr_ratio, self.attn_drop = num_heads, dim // num_heads, sr_ratio, attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio, **dd)
            self.norm = nn.LayerNorm(dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q = self.q(x).reshape(b, h * w, self.num_heads, self.head_dim)
        kv_in = x
        if self.sr_ratio > 1:
            kv_in = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        k, v = self.kv(kv_in).reshape(b, -1, 2, self.num_heads, self.head_dim).unbind(2)
        keys = (h, w) if self.sr_ratio == 1 else ops.TokenGrid(tuple(kv_in.shape[1:3]), name='pooled')
        out = ops.dense_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0., token_grid=((h, w), keys))
        return self.proj_drop(self.proj(out.reshape(b, h, w, c)))


class PVTBlock(nn.Module):
    """Pre-norm PVT block on an NHWC map: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, kind: str, build_size: int, sr_ratio: int = 1, agent_num: int = 49,
                 agent_shape: Sequence[int] | None = None, kernel_func: str = 'identity', mlp_ratio: float = 4.,
                 qkv_bias: bool = True, proj_drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if kind not in PVT_KINDS:
            raise ValueError(f'kind must be one of {PVT_KINDS}, got {kind!r}')
        self.kind = kind
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        if kind == 'sra':
            self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                                  proj_drop=proj_drop, **dd)
        elif kind == 'agent':
            self.attn = AgentAttention(dim, num_heads, agent_num, build_size, qkv_bias=qkv_bias, separate_q=True,
                                       attn_drop=attn_drop, proj_drop=proj_drop, agent_shape=agent_shape, **dd)
        else:
            self.attn = InLineAttention(dim, num_heads, qkv_bias=qkv_bias, separate_q=True, kernel_func=kernel_func,
                                        proj_drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """A ``patch_size`` stride conv (a remainder row / column dropped, as the official code) and a LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = LayerNorm2d(embed_dim, eps=1e-5, **dd)  # nn.LayerNorm's default, as the official embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


@register_notrace_module  # torch.fx: a leaf (position embedding resized to the map size)
class PVTStage(nn.Module):
    """Patch embedding (``downsample``; none for stage 1, whose embedding is the model's stem), the position
    embedding ``pos_embed [1, H0 * W0, C]`` of the build grid, then one block per entry of ``kinds``; NCHW in and
    out."""

    def __init__(self, dim: int, out_dim: int, kinds: Sequence[str], downsample: bool, build_grid: tuple[int, int],
                 drop_path: Sequence[float], device=None, dtype=None, **block_kwargs: Any):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.grad_checkpointing = False
        self.downsample = PatchEmbed(dim, out_dim, 2, **dd) if downsample else nn.Identity()
        self.build_grid = build_grid
        self.pos_embed = nn.Parameter(torch.zeros(1, build_grid[0] * build_grid[1], out_dim, **dd))
        if self.pos_embed.device.type != 'meta':
            trunc_normal_(self.pos_embed, std=.02)
        self.blocks = nn.Sequential(*[PVTBlock(out_dim, kind=kind, build_size=build_grid[0], drop_path=drop_path[j],
                                               **block_kwargs, **dd) for j, kind in enumerate(kinds)])

    def position_embedding(self, size: tuple[int, int]) -> torch.Tensor:
        """``[1, H, W, C]``: the build-grid embedding, bilinearly resized to ``size`` when it differs."""
        pos = self.pos_embed.reshape(1, *self.build_grid, -1)
        if size == self.build_grid:
            return pos
        return F.interpolate(pos.permute(0, 3, 1, 2), size=size, mode='bilinear').permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)
        x = x + self.position_embedding((x.shape[1], x.shape[2]))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2)


class _Stem(PatchEmbed):
    """Stage 1's 4x4 patch embedding, with the input checks."""

    def __init__(self, in_chans: int, embed_dim: int, device=None, dtype=None):
        super().__init__(in_chans, embed_dim, 4, device=device, dtype=dtype)
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans, _MIN_SIZE, 'a 4x4 then three 2x2 patch embeddings')
        return super().forward(x)


def _resize_pos_embed(pos: torch.Tensor, target: torch.Tensor, owner: nn.Module) -> torch.Tensor:
    """A stage's position embedding ``[1, H0 * W0, C]`` of another (square) build grid, bilinearly resized to the
    stage's build grid: the rule its forward applies at any other map."""
    side = math.isqrt(pos.shape[1]) if pos.ndim == 3 else 0
    if side * side != pos.shape[1] or pos.shape[-1] != target.shape[-1]:
        return pos
    grid = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(owner.build_grid), mode='bilinear').permute(0, 2, 3, 1)
    return grid.reshape(1, -1, pos.shape[-1]).to(pos.dtype)


class PVT(HierarchicalModel):
    """PVT-v1 with a per-stage attention choice (Agent-PVT, InLine-PVT).

    Args:
        attn_kinds: per stage, the kind of each block, one of ``PVT_KINDS`` (:mod:`backbones._attn_kinds`; the
            official models keep one per stage); ``None``: spatial-reduction attention everywhere (PVT).
        img_size: the build input size (position embeddings and agent biases are sized to its stage grids).
        embed_dims, depths, num_heads, mlp_ratios: per stage.
        sr_ratios: spatial reduction of the ``'sra'`` stages.
        agent_num: agents per stage; agent_shapes: per stage, the agent grid at run time (the official downstream
            ``downstream_agent_shapes``; ``None`` keeps the build grids).
        kernel_func: InLine's feature map.
        qkv_bias: bias in the q / kv projections.
        proj_drop_rate: after projections, in the MLP and on the position embedding
            (the official ``drop_rate``); attn_drop_rate; drop_path_rate: stochastic depth, linear over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (classifier dropout),
            ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    KINDS = PVT_KINDS
    stem_pattern = r'^patch_embed|^stages\.0\.pos_embed'
    stage_entry, group_tail = r'(?:downsample|pos_embed)', ()  # no final norm
    # The official layout: ``patch_embed{i}``, ``pos_embed{i}``, ``block{i}`` per stage (from 1); position embeddings
    # and agent biases of another build size resized.
    checkpoint_layout = Layout(
        name='PVT-skeleton', marker=r'^stages\.\d+\.pos_embed$',
        summary=attention_summary('A agent, I InLine, - spatial reduction'),
        renames=(('patch_embed1.', 'patch_embed.'), ('patch_embed{i}.', 'stages.{i-1}.downsample.'),
                 ('pos_embed{i}', 'stages.{i-1}.pos_embed'), ('block{i}.', 'stages.{i-1}.blocks.'), *HEAD_FC),
        resize={**AGENT_BIAS_RESIZE, r'^stages\.\d+\.pos_embed$': _resize_pos_embed})

    def __init__(
            self,
            attn_kinds: Sequence[Sequence[str]] | None = None,
            img_size: int | Sequence[int] = 224,
            embed_dims: Sequence[int] = (64, 128, 320, 512),
            depths: Sequence[int] = (3, 4, 6, 3),
            num_heads: Sequence[int] = (1, 2, 5, 8),
            mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            sr_ratios: Sequence[int] = (8, 4, 2, 1),
            agent_num: Sequence[int] = (9, 16, 49, 49),
            agent_shapes: Sequence[Sequence[int] | None] | None = None,
            kernel_func: str = 'identity',
            qkv_bias: bool = True,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, embed_dims=embed_dims, num_heads=num_heads, mlp_ratios=mlp_ratios, sr_ratios=sr_ratios,
                        agent_num=agent_num, agent_shapes=agent_shapes, attn_kinds=attn_kinds)
        agent_shapes = [None] * n if agent_shapes is None else list(agent_shapes)
        self.attn_kinds = attn_kinds = check_attn_kinds(attn_kinds, depths, self.KINDS)
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_embed = _Stem(self.in_chans, embed_dims[0], **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self._set_stages([PVTStage(
            embed_dims[max(i - 1, 0)], embed_dims[i], attn_kinds[i], downsample=i > 0,
            build_grid=(img_size[0] // 4 // 2 ** i, img_size[1] // 4 // 2 ** i), drop_path=dpr[i],
            num_heads=num_heads[i], sr_ratio=sr_ratios[i], agent_num=int(agent_num[i]), agent_shape=agent_shapes[i],
            kernel_func=kernel_func, mlp_ratio=mlp_ratios[i], qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
            attn_drop=attn_drop_rate, **dd) for i in range(n)], embed_dims)
        self._set_head(embed_dims[-1], nn.Identity())  # the official models have no final norm
        self.apply(trunc_normal_init)  # the official init

