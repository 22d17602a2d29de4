"""MaxViT on the shared neighborhood-attention op, weight-compatible with timm's ``maxvit_*_tf_*``.

MaxViT: Multi-Axis Vision Transformer (Tu et al., ECCV 2022, https://arxiv.org/abs/2204.01697), official
code https://github.com/google-research/maxvit; the weights are the official TF checkpoints as ported by timm.

Both MaxViT attentions are patterns of :func:`ops.na2d` on the ``[B, H, W, heads, head_dim]`` token grid:

* block attention over ``P x P`` windows: ``kernel_size = stride = P``;
* grid attention over a ``G x G`` grid: ``kernel_size = G``, ``dilation = H / G`` (token ``r`` is in group
  ``r % (H / G)`` at group coordinate ``r // (H / G)``, exactly timm's ``grid_partition``);
* the relative position bias is the op's ``rpb`` argument ``[heads, 2P - 1, 2P - 1]``, the same table as timm's
  ``RelPosBiasTf`` (bias of a pair = ``table[key - query + P - 1]`` per axis, in window/grid coordinates).

Model names ``maxvit_na_{tiny,small,base,large,xlarge}_tf_{224,384,512}``: ``na`` says the attention runs on the
neighborhood-attention op, ``tf`` that the configuration and weights are those of timm's ``maxvit_*_tf_*``
(which the ``na`` names never shadow). The architecture, parameter names (except ``attn.rpb``, timm's
``attn.rel_pos.relative_position_bias_table``) and outputs equal timm's. What differs:

* any input size: timm asserts every feature map is divisible by the partition size; here a map that is not is
  zero-padded to a multiple (bottom/right) for attention, padded keys are masked out, and the output is cropped
  back (``ops.window_attention`` / ``ops.grid_attention`` with ``padding='masked'``).
* each attention is one op call on the map (no partition/reverse permutes); ``attn_drop`` is not offered (0 in
  every official config).

Partition sizes follow timm: ``img_size // 32`` (7 at 224, 12 at 384, 16 at 512) unless given explicitly.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    DropPath,
    LayerNorm2d,
    Mlp,
    NormMlpClassifierHead,
    SEModule,
    calculate_drop_path_rates,
    create_conv2d,
    get_act_layer,
    get_norm_act_layer,
    make_divisible,
    resize_rel_pos_bias_table,
    to_2tuple,
)
from timm.layers.helpers import get_device_dtype
from timm.models import named_apply
from torch import nn

import ops

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, Stage, check_image, stage_count
from ._tf_same import SameAvgPool2d, SameConv2d
from .checkpoint import Layout, stage_summary

__all__ = ['MaxViTNA']

_ARCHS = {
    # name: (embed_dim, depths, stem_width); head hidden size = embed_dim[-1], as the official models
    'tiny': ((64, 128, 256, 512), (2, 2, 5, 2), 64),
    'small': ((96, 192, 384, 768), (2, 2, 5, 2), 64),
    'base': ((96, 192, 384, 768), (2, 6, 14, 2), 64),
    'large': ((128, 256, 512, 1024), (2, 6, 14, 2), 128),
    'xlarge': ((192, 384, 768, 1536), (2, 6, 14, 2), 192),
}


def _conv_init(module: nn.Module, name: str = '') -> None:
    """EfficientNet-style fan-out normal init of convolutions (timm's 'vit_eff' scheme for conv blocks)."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _transformer_init(module: nn.Module, name: str = '') -> None:
    """ViT-style xavier init of linear layers; MLP biases get a tiny normal (timm's 'vit_eff' scheme)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            if 'mlp' in name:
                nn.init.normal_(module.bias, std=1e-6)
            else:
                nn.init.zeros_(module.bias)


class Stem(nn.Module):
    """3x3 stride-2 conv, BN + act, 3x3 conv (TF 'same' padding: :class:`~backbones._tf_same.SameConv2d`)."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: str = 'gelu_tanh', norm_eps: float = 1e-3, device=None,
                 dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        norm_act_layer = partial(get_norm_act_layer('batchnorm2d', act_layer), eps=norm_eps)
        self.conv1 = SameConv2d(in_chs, out_chs, 3, stride=2, **dd)
        self.norm1 = norm_act_layer(out_chs, **dd)
        self.conv2 = SameConv2d(out_chs, out_chs, 3, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


class Downsample(nn.Module):
    """Shortcut of a strided MBConv: 2x2 average pool ('same' padding), then a 1x1 conv if channels change."""

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None):
        super().__init__()
        self.pool = SameAvgPool2d(2, count_include_pad=True)  # timm's AvgPool2dSame (padding zeros averaged)
        self.expand = nn.Conv2d(in_chs, out_chs, 1, bias=True, device=device, dtype=dtype) if in_chs != out_chs \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


class MBConv(nn.Module):
    """Pre-norm inverted bottleneck: BN, 1x1 expand, BN-act, 3x3 depthwise (strided), BN-act, SE, 1x1 project."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            expand_ratio: float = 4.,
            se_ratio: float = 0.25,
            act_layer: str = 'gelu_tanh',
            norm_eps: float = 1e-3,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f'MBConv changes channels ({in_chs} -> {out_chs}) only in its strided first block')
        norm_act_layer = partial(get_norm_act_layer('batchnorm2d', act_layer), eps=norm_eps)
        mid_chs = make_divisible(out_chs * expand_ratio)
        self.shortcut = Downsample(in_chs, out_chs, **dd) if stride == 2 else nn.Identity()
        self.pre_norm = norm_act_layer(in_chs, apply_act=False, **dd)
        self.conv1_1x1 = create_conv2d(in_chs, mid_chs, 1, **dd)
        self.norm1 = norm_act_layer(mid_chs, **dd)
        self.conv2_kxk = SameConv2d(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs, bias=False, **dd)
        self.norm2 = norm_act_layer(mid_chs, **dd)
        self.se = SEModule(mid_chs, rd_channels=int(out_chs * se_ratio), act_layer=get_act_layer('silu'), **dd)
        self.conv3_1x1 = create_conv2d(mid_chs, out_chs, 1, bias=True, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.norm1(self.conv1_1x1(self.pre_norm(x)))
        x = self.se(self.norm2(self.conv2_kxk(x)))
        x = self.conv3_1x1(x)
        return self.drop_path(x) + shortcut


class PartitionAttention(nn.Module):
    """Multi-head attention inside block windows or grid groups of a ``[B, H, W, C]`` map (``ops.na2d`` patterns).

    Sizes not divisible by the partition are zero-padded for the op with the padded keys masked, and cropped after.
    """

    def __init__(
            self,
            dim: int,
            partition_size: tuple[int, int],
            grid: bool = False,
            dim_head: int = 32,
            proj_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if dim % dim_head:
            raise ValueError(f'dim ({dim}) must be divisible by dim_head ({dim_head})')
        self.num_heads = dim // dim_head
        self.dim_head = dim_head
        self.partition_size = partition_size
        self.grid = grid
        self.qkv = nn.Linear(dim, dim * 3, **dd)
        self.rpb = nn.Parameter(
            torch.empty(self.num_heads, 2 * partition_size[0] - 1, 2 * partition_size[1] - 1, **dd))
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.normal_(self.rpb, std=.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.dim_head).unbind(3)
        attention = ops.grid_attention if self.grid else ops.window_attention
        x = attention(q, k, v, self.partition_size, padding='masked', rpb=self.rpb)
        return self.proj_drop(self.proj(x.reshape(B, H, W, C)))


class PartitionTransformer(nn.Module):
    """Pre-norm transformer layer (partition attention + MLP) on a channels-last map; ``attn_kwargs``:
    :class:`PartitionAttention`'s ``grid`` and ``dim_head``."""

    def __init__(self, dim: int, partition_size: tuple[int, int], mlp_ratio: float = 4., act_layer: str = 'gelu_tanh',
                 norm_eps: float = 1e-5, proj_drop: float = 0., drop_path: float = 0., device=None, dtype=None,
                 **attn_kwargs: Any):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.attn = PartitionAttention(dim, partition_size, proj_drop=proj_drop, **attn_kwargs, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=get_act_layer(act_layer), drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class MaxViTBlock(nn.Module):
    """MBConv, then block attention + MLP, then grid attention + MLP."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int,
            window_size: tuple[int, int],
            grid_size: tuple[int, int],
            dim_head: int = 32,
            mlp_ratio: float = 4.,
            proj_drop: float = 0.,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.conv = MBConv(in_chs, out_chs, stride=stride, drop_path=drop_path, **dd)
        layer = partial(
            PartitionTransformer, out_chs, dim_head=dim_head, mlp_ratio=mlp_ratio, proj_drop=proj_drop,
            drop_path=drop_path, **dd)
        self.attn_block = layer(window_size)
        self.attn_grid = layer(grid_size, grid=True)

    def init_weights(self) -> None:
        named_apply(_conv_init, self.conv)
        named_apply(_transformer_init, self.attn_block)
        named_apply(_transformer_init, self.attn_grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        x = self.attn_grid(self.attn_block(x))
        return x.permute(0, 3, 1, 2)


def _resize_rpb(table: torch.Tensor, target: torch.Tensor, owner: nn.Module) -> torch.Tensor:
    """A bias table of another partition size (e.g. 224 weights in a 384 model), resized as timm does."""
    if table.ndim != 3 or table.shape[0] != target.shape[0]:
        return table
    window = ((target.shape[1] + 1) // 2, (target.shape[2] + 1) // 2)
    return resize_rel_pos_bias_table(table, new_window_size=window, new_bias_shape=tuple(target.shape))


class MaxViTNA(HierarchicalModel):
    """MaxViT (official TF configuration) with block/grid attention on ``ops.na2d``; any input size."""

    # timm's maxvit_*_tf_* layout but for the bias tables' name; tables of another partition size resized
    checkpoint_layout = Layout(
        name='MaxViT (timm maxvit_*_tf_* layout)', marker=r'\.attn_grid\.attn\.rpb$',
        renames=(('.attn.rel_pos.relative_position_bias_table', '.attn.rpb'),), resize={r'\.attn\.rpb$': _resize_rpb},
        summary=stage_summary('attn_block.norm1.weight'))
    stem_pattern = r'^stem'
    stem_feature = True  # feature level 0 is the stride-2 stem (timm's MaxViT)

    def __init__(
            self,
            embed_dim: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 5, 2),
            stem_width: int = 64,
            head_hidden_size: int | None = None,
            img_size: int | tuple[int, int] = 224,
            window_size: int | tuple[int, int] | None = None,
            grid_size: int | tuple[int, int] | None = None,
            dim_head: int = 32,
            mlp_ratio: float = 4.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            **kwargs: Any,
    ):
        """
        Args:
            embed_dim: Channels of the four stages.
            depths: Blocks per stage.
            stem_width: Stem channels.
            head_hidden_size: Width of the head's pre-logits layer (default: ``embed_dim[-1]``).
            img_size: Training resolution; sets the default partition size ``img_size // 32``.
            window_size: Block-attention window (default ``img_size // 32``).
            grid_size: Grid-attention grid (default ``window_size``).
            dim_head: Channels per attention head.
            mlp_ratio: MLP expansion of the transformer layers.
            proj_drop_rate: Dropout after attention/MLP projections.
            drop_path_rate: Stochastic depth rate, linear over blocks.
            **kwargs: The shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (before the classifier),
                ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
        """
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, embed_dim=embed_dim)
        img_size = to_2tuple(img_size)
        window_size = to_2tuple(window_size) if window_size is not None else (img_size[0] // 32, img_size[1] // 32)
        grid_size = to_2tuple(grid_size) if grid_size is not None else window_size
        if min(window_size) < 1 or min(grid_size) < 1:
            raise ValueError(f'window_size {window_size} and grid_size {grid_size} must be >= 1 (img_size >= 32)')
        self.window_size, self.grid_size = window_size, grid_size
        self.embed_dim = embed_dim[-1]

        self.stem = Stem(self.in_chans, stem_width, **dd)
        self.feature_info = [dict(num_chs=stem_width, reduction=2, module='stem')]
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        block = partial(MaxViTBlock, window_size=window_size, grid_size=grid_size, dim_head=dim_head,
                        mlp_ratio=mlp_ratio, proj_drop=proj_drop_rate, **dd)
        self._set_stages([Stage(None, [  # a stride-2 stage: its first block downsamples
            block(([stem_width, *embed_dim][i] if j == 0 else embed_dim[i]), embed_dim[i], 2 if j == 0 else 1,
                  drop_path=rate) for j, rate in enumerate(dpr[i])], nhwc=False) for i in range(n)], embed_dim)
        # the final norm lives in the head, after pooling (as the official models)
        self._set_head(embed_dim[-1], nn.Identity(), NormMlpClassifierHead(
            embed_dim[-1], self.num_classes, hidden_size=head_hidden_size or embed_dim[-1],
            pool_type=self.global_pool, drop_rate=self.drop_rate, norm_layer=partial(LayerNorm2d, eps=1e-5), **dd))
        self.head_hidden_size = head_hidden_size or embed_dim[-1]

        named_apply(_conv_init, self.stem)
        for stage in self.stages:
            for block in stage.blocks:
                block.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith('.rpb')}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r'^stem', blocks=[(r'^stages\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, **get_device_dtype(self))

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans)
        return self.stem(x)


def _releases(size: str, res: int) -> dict[str, dict[str, Any]]:
    """timm's converted TF weights of ``maxvit_<size>_tf_<res>`` (``timm/<name>.<tag>``), with timm's eval settings."""
    timm_name = f'maxvit_{size}_tf_{res}'
    view = dict(crop_pct=0.95) if res == 224 else dict(crop_pct=1.0, crop_mode='squash')
    releases = {}
    if size != 'xlarge':  # the 224 ImageNet-1k models were trained on ImageNet-normalised inputs
        norm = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) if res == 224 else {}
        releases['in1k'] = dict(view, **norm, hf_hub_id=f'timm/{timm_name}.in1k')
    if size in ('base', 'large', 'xlarge'):
        tag = 'in21k' if res == 224 else 'in21k_ft_in1k'
        releases[tag] = dict(view, hf_hub_id=f'timm/{timm_name}.{tag}',
                             **(dict(num_classes=21843) if res == 224 else {}))
    return releases


_SIZES = dict(tiny='T', small='S', base='B', large='L', xlarge='XL')


def _doc(size: str, res: int) -> str:
    timm_name = f'maxvit_{size}_tf_{res}'
    if size == 'tiny':
        what = ', on the neighborhood-attention op; loads timm\'s' if res == 224 else '; timm\'s'
        return f'MaxViT-T, {res} (window/grid {res // 32}){what} {timm_name} weights.'
    if size == 'xlarge':
        tag = 'in21k weights (21843 classes)' if res == 224 else 'in21k_ft_in1k weights'
        return f'MaxViT-XL, {res}; timm\'s {timm_name}.{tag}.'
    extra = {'base': ' (in1k, or {})', 'large': ' (in1k, or {})'}.get(size, '')
    extra = extra.format('in21k with the .in21k tag' if res == 224 else '.in21k_ft_in1k')
    return f'MaxViT-{_SIZES[size]}, {res}; timm\'s {timm_name} weights{extra}.'


# Default weights of a checkpoint that holds both raw and EMA weights: the EMA ones (timm's order; the TF MaxViT
# recipes evaluate an EMA of the weights). The released weights (timm's port) are plain state dicts, so this only
# decides for files such as train.py's with --model-ema.
register(Family(
    'maxvit_na', __name__, MaxViTNA, ema=True,
    cfg=dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='stem.conv1', license='apache-2.0',
             paper_name='MaxViT: Multi-Axis Vision Transformer', paper_ids='arXiv:2204.01697',
             origin_url='https://github.com/google-research/maxvit'),
    variants={f'maxvit_na_{size}_tf_{res}': Variant(_doc(size, res), dict(
        embed_dim=embed_dim, depths=depths, stem_width=stem_width, img_size=res), _releases(size, res))
        for size, (embed_dim, depths, stem_width) in _ARCHS.items() for res in (224, 384, 512)}))
