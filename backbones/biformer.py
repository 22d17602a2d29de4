"""BiFormer: vision transformers with bi-level routing attention (BRA).

Paper: `BiFormer: Vision Transformer with Bi-Level Routing Attention` (CVPR 2023) - https://arxiv.org/abs/2303.08810
Official code and weights (MIT): https://github.com/rayleizhu/BiFormer (``models/biformer.py``, ``models/_common.py``,
``ops/bra_legacy.py``, ``models/biformer_stl.py``).

* BRA (stages with ``topk > 0``, :class:`BiLevelRoutingAttention`): one ``qkv`` Linear to q, k (``qk_dim`` each) and
  v (``dim``); the map is split into ``n_win x n_win`` regions; each query region routes to the ``topk`` key regions
  whose mean key best matches its mean query (:func:`ops.region_routing`, detached: the official
  ``diff_routing=False``; its other routing modes serve no released model), then every query attends over the
  union of its routed regions' tokens (:func:`ops.routed_attention`: an index list per region, no gathered copy of
  K/V). The scale is ``qk_dim ** -0.5`` (the full channel width, not the head width: the official quirk). LePE, a
  depthwise 5x5 conv on V, is added to the attention output before the ``proj`` Linear.
* Stage 4 (``topk = -2``, :class:`GlobalAttentionLePE`): plain multi-head self-attention over the whole map
  (:func:`ops.dense_attention`) with the official ``AttentionLePE``'s own settings, which the official block leaves
  at their defaults: 8 heads whatever ``head_dim``, scale ``(dim / 8) ** -0.5``, no qkv bias, and LePE on the
  block's normalised *input* (not on V).
* Block (NHWC): conv position embedding (depthwise 3x3, residual; none in BiFormer-STL), then pre-norm
  (LayerNorm, eps 1e-6) attention and MLP (Linear, GELU, Linear) residuals with stochastic depth.
* BiFormer: two 3x3 stride-2 convs (BN, GELU between, BN after) as stem, 3x3 stride-2 conv + BN between stages.
  BiFormer-STL (the Swin-T layout ablation): 4x4 patch conv + BN stem, BN + 2x2 stride-2 conv merging.
  Both end with BatchNorm, average pooling and a Linear classifier.

Any input size. BRA needs the map to divide into ``n_win x n_win`` regions: like the official ``auto_pad`` (on in
its detection and segmentation backbones; the classification models assert divisibility instead), the normalised
tokens are zero-padded at the bottom/right *before* the qkv projection, so padded tokens carry the projection
biases, take part in the region means and the LePE conv and are attended to as keys; the output is cropped back.
At sizes that divide, nothing is padded and the result is the official one. ``mask_padding=True`` instead leaves
the padded tokens out of the routing means, the keys and LePE (the correct behaviour; not the official checkpoints'
training condition).

Differences from the official module layout (``BiFormer.checkpoint_layout`` maps official checkpoints onto ours):
``downsample_layers.0`` -> ``stem``, ``downsample_layers.{i}`` -> ``stages.{i}.downsample``, ``stages.{i}.{j}``
-> ``stages.{i}.blocks.{j}`` (BiFormer; STL has ``blocks`` already), ``attn.qkv.qkv`` -> ``attn.qkv``, ``attn.wo``
-> ``attn.proj``, ``mlp.0`` / ``mlp.3`` (``mlp.2`` in STL) -> ``mlp.fc1`` / ``mlp.fc2``, ``head`` -> ``head.fc``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp

import ops

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, Stage, check_image, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['BiFormer', 'BiFormerBlock', 'BiLevelRoutingAttention', 'GlobalAttentionLePE']

_LN_EPS = 1e-6
_GLOBAL_HEADS = 8  # the official AttentionLePE default, which its Block never overrides


def _lepe(dim: int, kernel_size: int, dd: dict) -> nn.Conv2d | None:
    """Depthwise ``kernel_size`` conv (LePE), or None for 0 (the official zero branch)."""
    return nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd) if kernel_size > 0 else None


def _conv_nhwc(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention on an NHWC map (see the module docstring).

    Args:
        dim: channels (and V width); num_heads: heads (dividing ``qk_dim`` and ``dim``).
        n_win: regions per side; topk: key regions each query region attends to (<= ``n_win ** 2``).
        qk_dim: q / k width (default ``dim``); the attention and routing scale is ``qk_dim ** -0.5``.
        side_dwconv: LePE kernel (0: none).
        mask_padding: leave the tokens padded to a multiple of ``n_win`` out of the region means, the keys and LePE
            (off: the official ``auto_pad``, padded tokens are routed on, attended to and convolved).
    """

    def __init__(self, dim: int, num_heads: int, n_win: int, topk: int, qk_dim: int | None = None,
                 side_dwconv: int = 5, mask_padding: bool = False, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        qk_dim = qk_dim or dim
        if qk_dim % num_heads or dim % num_heads:
            raise ValueError(f'qk_dim {qk_dim} and dim {dim} must be divisible by num_heads {num_heads}')
        if not 0 < topk <= n_win ** 2:
            raise ValueError(f'topk must be in [1, n_win ** 2 = {n_win ** 2}] routed regions, got {topk}')
        self.dim, self.qk_dim, self.num_heads, self.n_win, self.topk = dim, qk_dim, num_heads, n_win, topk
        self.scale = qk_dim ** -0.5
        self.mask_padding = mask_padding
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim, **dd)
        self.lepe = _lepe(dim, side_dwconv, dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x, size = ops.pad_to_multiple(x, self.n_win, dims=(1, 2))  # the official auto_pad
        Hp, Wp = x.shape[1:3]
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        valid = tuple(size) if self.mask_padding else None
        # the routing weights go unused: the official hard, detached routing
        _, indices = ops.region_routing(q, k, self.n_win, self.topk, scale=self.scale, valid_shape=valid)
        heads = (B, Hp, Wp, self.num_heads, -1)
        out = ops.routed_attention(q.reshape(heads), k.reshape(heads), v.reshape(heads), indices, self.n_win,
                                   scale=self.scale, valid_shape=valid, token_grid=(H, W)).reshape(B, Hp, Wp, C)
        if self.mask_padding:  # LePE on the real map (zeros beyond its border, not the padded tokens' V)
            out, v = ops.crop(out, size, dims=(1, 2)), ops.crop(v, size, dims=(1, 2))
        if self.lepe is not None:
            out = out + _conv_nhwc(self.lepe, v)
        return ops.crop(self.proj(out), size, dims=(1, 2))


class GlobalAttentionLePE(nn.Module):
    """Multi-head self-attention over the whole NHWC map plus LePE on the input (official ``AttentionLePE``).

    Args:
        dim: channels; num_heads: heads (scale ``(dim / num_heads) ** -0.5``); side_dwconv: LePE kernel (0: none).
    """

    def __init__(self, dim: int, num_heads: int = _GLOBAL_HEADS, side_dwconv: int = 5, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.lepe = _lepe(dim, side_dwconv, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).unbind(2)
        out = ops.dense_attention(q, k, v, token_grid=(H, W)).reshape(B, H, W, C)
        if self.lepe is not None:
            out = out + _conv_nhwc(self.lepe, x)
        return self.proj(out)


class BiFormerBlock(nn.Module):
    """Conv position embedding, then pre-norm attention and MLP residuals, on NHWC maps.

    Args:
        dim: channels. num_heads: BRA heads. n_win, topk: BRA regions per side and routed regions (``topk = -2``:
            :class:`GlobalAttentionLePE`). qk_dim: BRA q / k width. mlp_ratio: MLP hidden width / dim.
        side_dwconv: LePE kernel. cpe_ks: position-embedding kernel (0: none). drop_path: stochastic depth.
        mask_padding: see :class:`BiLevelRoutingAttention`.
    """

    def __init__(self, dim: int, num_heads: int, n_win: int, topk: int, qk_dim: int | None = None,
                 mlp_ratio: float = 4., side_dwconv: int = 5, cpe_ks: int = 3, drop_path: float = 0.,
                 mask_padding: bool = False, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        # the official conv always pads by 1 (a "same" conv for its kernel 3 only)
        self.pos_embed = nn.Conv2d(dim, dim, cpe_ks, padding=1, groups=dim, **dd) if cpe_ks > 0 else None
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads, n_win, topk, qk_dim, side_dwconv, mask_padding, **dd)
        elif topk == -2:
            self.attn = GlobalAttentionLePE(dim, side_dwconv=side_dwconv, **dd)
        else:
            raise ValueError(f'topk must be > 0 (routing attention) or -2 (global attention + LePE), got {topk}')
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + _conv_nhwc(self.pos_embed, x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _stem(in_chans: int, dim: int, swin_layout: bool, dd: dict) -> nn.Sequential:
    if swin_layout:
        return nn.Sequential(nn.Conv2d(in_chans, dim, 4, 4, **dd), nn.BatchNorm2d(dim, **dd))
    return nn.Sequential(
        nn.Conv2d(in_chans, dim // 2, 3, 2, 1, **dd), nn.BatchNorm2d(dim // 2, **dd), nn.GELU(),
        nn.Conv2d(dim // 2, dim, 3, 2, 1, **dd), nn.BatchNorm2d(dim, **dd))


def _downsample(dim: int, out_dim: int, swin_layout: bool, dd: dict) -> nn.Sequential:
    if swin_layout:  # norm, then 2x2 patch merging
        return nn.Sequential(nn.BatchNorm2d(dim, **dd), nn.Conv2d(dim, out_dim, 2, 2, **dd))
    return nn.Sequential(nn.Conv2d(dim, out_dim, 3, 2, 1, **dd), nn.BatchNorm2d(out_dim, **dd))


class BiFormer(HierarchicalModel):
    """BiFormer (and the Swin-layout BiFormer-STL).

    Args:
        depths: blocks per stage. embed_dims: widths per stage. head_dim: channels per BRA head
            (heads = ``qk_dims[i] // head_dim``). qk_dims: BRA q / k widths per stage (default: the stage widths).
        mlp_ratios: MLP hidden width / width, per stage. topks: routed regions per stage (-2: global attention).
        n_win: BRA regions per side (official: 7 for ImageNet, 16 detection, 8 segmentation).
        side_dwconv: LePE kernel. cpe_ks: block position-embedding kernel (0: none, as STL).
        swin_layout: 4x4 patch stem and BN + 2x2 conv merging (BiFormer-STL) instead of the overlapping 3x3 convs.
        mask_padding: leave padded tokens out of BRA's routing and keys (see the module docstring).
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (classifier dropout),
            ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    stem_pattern = r'^stem'
    # The official layout: ``downsample_layers`` (0: the stem), Sequential stages (BiFormer), ``qkv.qkv`` / ``wo``,
    # the MLP's Linears by position (``mlp.3``: after the unused DWConv slot and GELU; ``mlp.2`` in STL).
    checkpoint_layout = Layout(
        name='BiFormer', marker=r'\.attn\.lepe\.weight$', summary=stage_summary('norm1.weight'),
        renames=(('downsample_layers.0.', 'stem.'), ('downsample_layers.{i}.', 'stages.{i}.downsample.'),
                 ('stages.{i}.{j}.', 'stages.{i}.blocks.{j}.'), ('.attn.qkv.qkv.', '.attn.qkv.'),
                 ('.attn.wo.', '.attn.proj.'), ('.mlp.0.', '.mlp.fc1.'), ('.mlp.3.', '.mlp.fc2.'),
                 ('.mlp.2.', '.mlp.fc2.'), *HEAD_FC))

    def __init__(
            self,
            depths: Sequence[int] = (4, 4, 18, 4),
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            head_dim: int = 32,
            qk_dims: Sequence[int] | None = None,
            mlp_ratios: Sequence[float] = (3, 3, 3, 3),
            topks: Sequence[int] = (1, 4, 16, -2),
            n_win: int = 7,
            side_dwconv: int = 5,
            cpe_ks: int = 3,
            swin_layout: bool = False,
            mask_padding: bool = False,
            drop_path_rate: float = 0.,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, embed_dims=embed_dims, qk_dims=qk_dims, mlp_ratios=mlp_ratios, topks=topks)
        qk_dims = tuple(embed_dims) if qk_dims is None else tuple(qk_dims)
        if not isinstance(n_win, int) or isinstance(n_win, bool) or n_win < 1:
            raise ValueError(f'n_win must be an int >= 1, got {n_win!r}')
        self.swin_layout = swin_layout
        self.stem = _stem(self.in_chans, embed_dims[0], swin_layout, dd)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages = []
        for i in range(n):
            blocks = [BiFormerBlock(
                embed_dims[i], qk_dims[i] // head_dim, n_win, topks[i], qk_dims[i], mlp_ratios[i], side_dwconv,
                cpe_ks, dpr[sum(depths[:i]) + j], mask_padding, **dd) for j in range(depths[i])]
            down = None if i == 0 else _downsample(embed_dims[i - 1], embed_dims[i], swin_layout, dd)
            stages.append(Stage(down, blocks))
        self._set_stages(stages, embed_dims)
        self._set_head(embed_dims[-1], nn.BatchNorm2d(embed_dims[-1], **dd))
        self.apply(trunc_normal_init)  # the official init (convs and norms: PyTorch defaults)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        # BiFormer-STL's strided patch convs floor each side: 32 -> 1
        check_image(x, self.in_chans, 32 if self.swin_layout else 1, '4x4 patches, then three 2x2 merges')
        return self.stem(x)


# ---------------------------------------------------------------------------------------------------------------
# Variants

_BIFORMER = dict(mlp_ratios=(3, 3, 3, 3), topks=(1, 4, 16, -2), head_dim=32, n_win=7, side_dwconv=5, cpe_ks=3)
_URL = 'https://api.onedrive.com/v1.0/shares/s!{}/root/content'  # the official README's / model_urls' links


def _onedrive(share: str) -> dict[str, dict[str, Any]]:
    return {'in1k': dict(url=_URL.format(share))}


# The official entrypoints (models/biformer.py, models/biformer_stl.py); drop_path_rate: the official training
# values are set by the recipes (configs/imagenet/), not here. The official loader reads `model` from the released
# files (its EMA, if saved, was not what the table measured): raw weights by default.
register(Family(
    'biformer', __name__, BiFormer, ema=False, cache_per_model=True,
    cfg=dict(first_conv='stem.0', license='mit', origin_url='https://github.com/rayleizhu/BiFormer',
             paper_ids='arXiv:2303.08810', paper_name='BiFormer: Vision Transformer with Bi-Level Routing Attention'),
    variants=dict(
        biformer_tiny=Variant('BiFormer-T: 13.1M params, 2.2 GFLOPs at 224.',
                              dict(_BIFORMER, depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512)),
                              _onedrive('AkBbczdRlZvChHEOoGkgwgQzEDlM')),
        biformer_small=Variant('BiFormer-S: 25.5M params, 4.5 GFLOPs at 224.',
                               dict(_BIFORMER, depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512)),
                               _onedrive('AkBbczdRlZvChHDyM-x9KWRBZ832')),
        biformer_base=Variant('BiFormer-B: 56.8M params, 9.8 GFLOPs at 224.',
                              dict(_BIFORMER, depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768)),
                              _onedrive('AkBbczdRlZvChHI_XPhoadjaNxtO')),
        biformer_stl=Variant('BiFormer-STL (Swin-T layout ablation: patch stem, no conv position embedding): 28.4M '
                             'params, 4.6 GFLOPs.',
                             dict(depths=(2, 2, 6, 2), embed_dims=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4),
                                  topks=(1, 4, 16, -2), head_dim=32, n_win=7, side_dwconv=5, cpe_ks=0,
                                  swin_layout=True),
                             _onedrive('AkBbczdRlZvChSf-m7ujkvx9lIQ1')),
    )))
