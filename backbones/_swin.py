"""The Swin skeleton with the attention chosen per stage (or per block), shared by Agent-Swin and InLine-Swin.

Swin (Liu et al., ICCV 2021): a 4x4 patch stem (conv + LayerNorm), four stages of pre-norm blocks (attention, then
an MLP) with a 2x2 patch merging in front of stages 2-4 (timm's ``PatchMerging``), a final LayerNorm and a
pooled linear head. A block's attention is one of

* ``'window'`` — Swin's (shifted) window attention with a relative position bias, :class:`ops.WindowAttention2D`
  (the official ``B`` / ``S`` blocks); window ``max(7, window_size // 8)``, odd blocks of a stage shifted by half a
  window; no shift on a map no larger than the window (the official models' rule);
* ``'agent'`` — agent attention over the whole stage map (``A``; :class:`backbones._agent_inline.AgentAttention`);
* ``'inline'`` — InLine attention over the whole stage map (``I``; :class:`backbones._agent_inline.InLineAttention`).

The official Agent/InLine-Swin configs set ``window_size`` to the stage-1 map (56 at 224, 72 at 288, 96 at 384), so
their A / I blocks see the whole map at the build size; their detection / segmentation backbones make them global at
every size, and so does this skeleton (the official classification code would window them on a larger map).

Any input size: the stem zero-pads the image to a multiple of 4; window blocks zero-pad the normalised tokens to a
multiple of the window and crop back (the official downstream backbones' padding, padded keys unmasked); patch
merging pads odd maps; agent biases are resized to the map (:mod:`backbones._agent_inline`). Module layout: timm's
(``stages.{i}.downsample`` in front, ``stages.{i}.blocks.{j}``, ``head.fc``); ``Swin.checkpoint_layout`` maps
the official layout (``layers.{i}``, downsample at the end) onto it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import (
    DropPath,
    LayerNorm2d,
    Mlp,
    calculate_drop_path_rates,
    register_notrace_module,
    resize_rel_pos_bias_table,
)
from timm.models.swin_transformer import PatchMerging
from torch import nn

import ops

from ._agent_inline import AGENT_BIAS_RESIZE, AgentAttention, InLineAttention, attention_summary
from ._attn_kinds import check_attn_kinds
from ._hierarchical import HierarchicalModel, Stage, check_image, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout

__all__ = ['Swin', 'SwinBlock', 'ATTN_KINDS']

ATTN_KINDS = ('window', 'agent', 'inline')
_MIN_SIZE = 29  # ceil(29 / 4) = 8 tokens survive three 2x2 mergings as 1 (as timm's / the official padding)


@register_notrace_module  # torch.fx: a leaf (shift chosen from the map size)
class SwinBlock(nn.Module):
    """Pre-norm Swin block on an NHWC map: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        dim, num_heads: width and heads.
        kind: one of ``ATTN_KINDS``.
        window_size, shift_size: the window / its shift (``'window'`` only).
        build_size: the map the agent biases are sized to (``'agent'`` only).
        agent_num, agent_shape: agents, and the agent grid at run time (``None``: the build grid; ``'agent'``).
        kernel_func: InLine's feature map (``'inline'``).
        mlp_ratio, qkv_bias, proj_drop, attn_drop, drop_path: as Swin.
    """

    def __init__(self, dim: int, num_heads: int, kind: str, window_size: int = 7, shift_size: int = 0,
                 build_size: int = 56, agent_num: int = 49, agent_shape: Sequence[int] | None = None,
                 kernel_func: str = 'identity', mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if kind not in ATTN_KINDS:
            raise ValueError(f'kind must be one of {ATTN_KINDS}, got {kind!r}')
        self.kind, self.window_size = kind, window_size
        self.norm1 = nn.LayerNorm(dim, **dd)
        if kind == 'window':
            self.attn = ops.WindowAttention2D(dim, num_heads, window_size, shift_size, qkv_bias=qkv_bias,
                                              attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        elif kind == 'agent':
            self.attn = AgentAttention(dim, num_heads, agent_num, build_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                       proj_drop=proj_drop, agent_shape=agent_shape, **dd)
        else:
            self.attn = InLineAttention(dim, num_heads, qkv_bias=qkv_bias, kernel_func=kernel_func,
                                        proj_drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.kind == 'window':
            # compiled / exported: the rule stays symbolic (the op picks at run time; no guard on the map size)
            side = torch.sym_min(x.shape[1], x.shape[2]) if torch.compiler.is_compiling() else min(x.shape[1:3])
            y = self.attn(y, shift=side > self.window_size)
        else:
            y = self.attn(y)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinPatchMerging(PatchMerging):
    """timm's ``PatchMerging`` (same parameters and arithmetic) with the odd-map padding of
    :func:`ops.pad_to_multiple`: timm's ``pad(W % 2)`` then ``reshape(H // 2)`` leaves sizes torch.export cannot
    simplify (a guard on the batch size, and minutes of symbolic reasoning), the ``ceil(n / 2) * 2`` form does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = ops.pad_to_multiple(x, 2, (1, 2))
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(Stage):
    """Optional patch merging (``dim`` -> ``out_dim``; timm's, on the NHWC map), then one block per entry of
    ``kinds``; NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, kinds: Sequence[str], downsample: bool, num_heads: int,
                 window_size: int, build_size: int, drop_path: Sequence[float], device=None, dtype=None,
                 **block_kwargs: Any):
        dd = {'device': device, 'dtype': dtype}
        small = max(7, window_size // 8)  # the official window of B / S blocks
        super().__init__(SwinPatchMerging(dim, out_dim, **dd) if downsample else None, [SwinBlock(
            out_dim, num_heads, kind, window_size=small, shift_size=small // 2 if j % 2 else 0,
            build_size=min(window_size, build_size), drop_path=drop_path[j], **block_kwargs, **dd)
            for j, kind in enumerate(kinds)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(self.downsample(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """4x4 patches (the image zero-padded to a multiple of 4, as the official downstream stem) and a LayerNorm."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 96, patch_size: int = 4, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.in_chans, self.patch_size = in_chans, patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = LayerNorm2d(embed_dim, eps=1e-5, **dd)  # nn.LayerNorm's default, as the official stem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans, _MIN_SIZE, 'three 2x2 patch mergings after the stride-4 stem')
        return self.norm(self.proj(ops.pad_to_multiple(x, self.patch_size, (2, 3))[0]))


def _resize_window_table(table: torch.Tensor, target: torch.Tensor, owner: nn.Module) -> torch.Tensor:
    """A relative position table ``[(2w-1)^2, heads]`` of another window, resized as timm does for Swin."""
    if table.ndim != 2 or table.shape[1] != target.shape[1]:
        return table
    return resize_rel_pos_bias_table(table, new_window_size=owner.window_size, new_bias_shape=tuple(target.shape))


class Swin(HierarchicalModel):
    """Swin with a per-block attention choice (Agent-Swin, InLine-Swin).

    Args:
        attn_kinds: per stage, the kind of each block, one of ``ATTN_KINDS`` (:mod:`backbones._attn_kinds`; a family's
            letters turn an official code into them); ``None``: window attention everywhere (Swin).
        img_size: the build input size: the agent biases are sized to its stage maps (the official ``img_size``).
        embed_dim, depths, num_heads: stage-1 width (doubling per stage), blocks and heads per stage.
        window_size: the official ``WINDOW_SIZE`` (the agent blocks' build window, clipped to the stage map; window
            blocks use ``max(7, window_size // 8)``).
        agent_num: agents per stage.
        agent_shapes: per stage, the agent grid at run time (the official downstream ``downstream_agent_shapes``);
            ``None`` keeps the build grids.
        kernel_func: InLine's feature map.
        mlp_ratio, qkv_bias: as Swin.
        proj_drop_rate: after projections and in the MLP (the official ``drop_rate``);
        attn_drop_rate: on attention probabilities; drop_path_rate: stochastic depth, linear over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (classifier dropout),
            ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    KINDS = ATTN_KINDS
    # The official layout: ``layers.{i}`` with the downsampling at their end; the derived buffers dropped; agent
    # biases and window tables of another build size resized.
    checkpoint_layout = Layout(
        name='Swin-skeleton', marker=r'^stages\.\d+\.blocks\.\d+\.attn\.',
        summary=attention_summary('A agent, I InLine, W window'),
        renames=(('layers.{i}.downsample.', 'stages.{i+1}.downsample.'), ('layers.', 'stages.'), *HEAD_FC),
        derived=('relative_position_index', 'attn_mask'),
        resize={**AGENT_BIAS_RESIZE, r'\.relative_position_bias_table$': _resize_window_table})

    def __init__(
            self,
            attn_kinds: Sequence[Sequence[str]] | None = None,
            img_size: int | Sequence[int] = 224,
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: int = 56,
            agent_num: Sequence[int] = (9, 16, 49, 49),
            agent_shapes: Sequence[Sequence[int] | None] | None = None,
            kernel_func: str = 'identity',
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        num_stages = stage_count(depths, num_heads=num_heads, agent_num=agent_num, agent_shapes=agent_shapes,
                                 attn_kinds=attn_kinds)
        agent_shapes = [None] * num_stages if agent_shapes is None else list(agent_shapes)
        self.attn_kinds = attn_kinds = check_attn_kinds(attn_kinds, depths, self.KINDS)
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        dims = [int(embed_dim * 2 ** i) for i in range(num_stages)]
        self.patch_embed = PatchEmbed(self.in_chans, dims[0], **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self._set_stages([SwinStage(
            dims[max(i - 1, 0)], dims[i], attn_kinds[i], downsample=i > 0, num_heads=num_heads[i],
            window_size=window_size, build_size=min(img_size) // 4 // 2 ** i, drop_path=dpr[i],
            agent_num=int(agent_num[i]), agent_shape=agent_shapes[i], kernel_func=kernel_func,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, **dd)
            for i in range(num_stages)], dims)
        self._set_head(dims[-1], LayerNorm2d(dims[-1], eps=1e-5, **dd))
        self.apply(trunc_normal_init)  # the official init (norms and convs keep PyTorch's)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The official classification exclusions: the relative position tables (``no_weight_decay_keywords``); the
        agent biases are decayed there (only the downstream configs exempt them, in their optimizer settings)."""
        return {n for n, _ in self.named_parameters() if n.endswith('relative_position_bias_table')}
