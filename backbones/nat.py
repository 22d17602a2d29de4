"""NAT, DiNAT and DiNAT_s: hierarchical vision transformers on (dilated) neighborhood attention.

Papers:
    `Neighborhood Attention Transformer` (CVPR 2023) - https://arxiv.org/abs/2204.07143
    `Dilated Neighborhood Attention Transformer` - https://arxiv.org/abs/2209.15001
Official code and weights (MIT): https://github.com/SHI-Labs/Neighborhood-Attention-Transformer

* NAT: overlapping conv stem (two 3x3 stride-2 convs), blocks of 7x7 neighborhood attention with relative position
  bias (RPB), 3x3 stride-2 conv downsampling between stages.
* DiNAT: NAT whose blocks alternate plain and dilated neighborhood attention (dilation per block, as published).
* DiNAT_s: the Swin layout (4x4 patch stem, patch merging, MLP ratio 4) with NA / dilated NA alternating.

All three are one :class:`NAT` class on attnzoo's shared ``ops.NeighborhoodAttention2D`` (same ``qkv`` / ``rpb`` /
``proj`` parameters as NATTEN's module, so official checkpoints load). Feature maps smaller than kernel * dilation
are padded by that module exactly as NATTEN's was, so any input size works.

Differences from the official module layout (``NAT.checkpoint_layout`` maps official checkpoints onto ours):
    * a stage downsamples at its start (timm's layout), so every stage output is a feature map:
      ``levels.{i}.downsample`` / ``layers.{i}.downsample`` -> ``stages.{i+1}.downsample``;
    * ``levels`` / ``layers`` -> ``stages``, ``gamma1`` / ``gamma2`` -> ``ls1.gamma`` / ``ls2.gamma``,
      ``head`` -> ``head.fc``;
    * stages take and return NCHW maps (``features_only`` and ``forward_intermediates`` give NCHW).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, LayerScale, Mlp, calculate_drop_path_rates

from ops import NeighborhoodAttention2D

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, PatchStem, Stage, check_image, stage_count, trunc_normal_init
from ._swin import SwinPatchMerging
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['NAT']

_LN_EPS = 1e-5  # the official models use nn.LayerNorm's default eps everywhere


class ConvTokenizer(nn.Module):
    """NAT / DiNAT stem: two overlapping 3x3 stride-2 convs (stride 4 in all) and a LayerNorm; NCHW in and out."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 64, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1, **dd),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1, **dd),
        )
        self.norm = LayerNorm2d(embed_dim, eps=_LN_EPS, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans)
        return self.norm(self.proj(x))


class ConvDownsample(nn.Module):
    """NAT / DiNAT downsampling: 3x3 stride-2 conv (no bias) doubling channels, then LayerNorm; NCHW in, NHWC out."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1, bias=False, **dd)
        self.norm = nn.LayerNorm(out_dim, eps=_LN_EPS, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x).permute(0, 2, 3, 1))


class NATBlock(nn.Module):
    """Pre-norm transformer block: (dilated) neighborhood attention with RPB, then an MLP; optional layer scale."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kernel_size: int = 7,
            dilation: int = 1,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            qk_scale: float | None = None,
            layer_scale: float | None = None,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.attn = NeighborhoodAttention2D(
            dim, num_heads, kernel_size, dilation=dilation, bias=True, qkv_bias=qkv_bias, qk_scale=qk_scale,
            attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.ls1 = LayerScale(dim, layer_scale, **dd) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, **dd)
        self.ls2 = LayerScale(dim, layer_scale, **dd) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class NATStage(Stage):
    """Optional downsampling, then ``depth`` blocks with per-block dilations; NCHW in and out, NHWC inside."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            depth: int,
            num_heads: int,
            kernel_size: int = 7,
            dilations: Sequence[int] | None = None,
            downsample: str | None = None,
            drop_path: Sequence[float] | float = 0.,
            device=None,
            dtype=None,
            **block_kwargs: Any,
    ):
        dd = {'device': device, 'dtype': dtype}
        if downsample not in ('conv', 'merge', None):
            raise ValueError(f"downsample must be 'conv', 'merge' or None, got {downsample!r}")
        if downsample is None and dim != out_dim:
            raise ValueError(f'a stage without downsampling keeps its width, got dim={dim}, out_dim={out_dim}')
        dilations = [1] * depth if dilations is None else list(dilations)
        if len(dilations) != depth:
            raise ValueError(f'need one dilation per block: depth={depth} but dilations={dilations}')
        drop_path = list(drop_path) if isinstance(drop_path, Sequence) else [drop_path] * depth
        down = dict(conv=ConvDownsample, merge=SwinPatchMerging).get(downsample)  # timm's, exportable padding
        super().__init__(None if down is None else down(dim, out_dim, **dd), [
            NATBlock(out_dim, num_heads, kernel_size, dilation=dilations[i], drop_path=drop_path[i], **dd,
                     **block_kwargs)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the conv downsampling reads the NCHW map; patch merging (timm's Swin one: odd sizes zero-padded, the
        # official channel order) and the blocks work on NHWC
        conv = isinstance(self.downsample, ConvDownsample)
        x = self.downsample(x if conv else x.permute(0, 2, 3, 1))
        return self.run_blocks(x).permute(0, 3, 1, 2)


def _resize_rpb(rpb: torch.Tensor, target: torch.Tensor, owner: nn.Module) -> torch.Tensor:
    """An RPB table [heads, 2k-1, 2k-1] of another kernel, bicubic-resized (how the official 11x11 weights were made
    from 7x7 ones); one of other heads is left for the mismatch report."""
    if rpb.ndim != 3 or rpb.shape[0] != target.shape[0]:
        return rpb
    return F.interpolate(rpb[None].float(), size=tuple(target.shape[1:]), mode='bicubic', align_corners=False)[0].to(
        rpb.dtype)


_STAGES = stage_summary('norm1.weight', {'heads per stage': 'attn.rpb',
                                         'kernel sizes': ('attn.rpb', lambda r: (r.shape[-1] + 1) // 2)})


def _summary(state_dict: dict[str, Any]) -> dict[str, Any]:
    stem = ('conv tokenizer (NAT/DiNAT)' if 'patch_embed.proj.0.weight' in state_dict else
            '4x4 patches (DiNAT_s)' if 'patch_embed.proj.weight' in state_dict else None)
    return dict(stem=stem, **_STAGES(state_dict), **{'layer scale': any(k.endswith('.ls1.gamma') for k in state_dict)})


class NAT(HierarchicalModel):
    """NAT / DiNAT / DiNAT_s (one class: stem, downsampling and dilation schedule are arguments).

    Args:
        embed_dim: width of the first stage; stage ``i`` has ``embed_dim * 2 ** i`` channels.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        kernel_size: neighborhood size (odd).
        dilations: per stage, one dilation per block (``None``: no dilation, NAT).
        mlp_ratio: MLP hidden width / block width.
        qkv_bias: bias in the qkv projection.
        qk_scale: attention logit scale (``None``: head_dim ** -0.5).
        layer_scale: initial layer-scale value (``None``: no layer scale).
        stem_type: ``'conv'`` (NAT / DiNAT tokenizer) or ``'patch'`` (DiNAT_s 4x4 patches).
        downsample_type: ``'conv'`` (NAT / DiNAT) or ``'merge'`` (DiNAT_s patch merging).
        proj_drop_rate: dropout after the attention projection and in the MLP.
        attn_drop_rate: attention-probability dropout.
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (classifier dropout),
            ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    # The official checkpoints (NAT / DiNAT: ``levels``, DiNAT_s: ``layers``; downsampling at a level's end);
    # RPB tables of another kernel are resized bicubically.
    checkpoint_layout = Layout(
        name='NAT/DiNAT/DiNAT_s', marker=r'\.attn\.rpb$', summary=_summary, resize={r'\.attn\.rpb$': _resize_rpb},
        renames=(('levels.{i}.downsample.', 'stages.{i+1}.downsample.'), ('levels.', 'stages.'),
                 ('layers.{i}.downsample.', 'stages.{i+1}.downsample.'), ('layers.', 'stages.'),
                 ('.gamma{n}', '.ls{n}.gamma'), *HEAD_FC))

    def __init__(
            self,
            embed_dim: int = 64,
            depths: Sequence[int] = (3, 4, 18, 5),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            kernel_size: int = 7,
            dilations: Sequence[Sequence[int]] | None = None,
            mlp_ratio: float = 3.,
            qkv_bias: bool = True,
            qk_scale: float | None = None,
            layer_scale: float | None = None,
            stem_type: str = 'conv',
            downsample_type: str = 'conv',
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.2,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        num_stages = stage_count(depths, num_heads=num_heads, dilations=dilations)
        if stem_type not in ('conv', 'patch'):
            raise ValueError(f"stem_type must be 'conv' or 'patch', got {stem_type!r}")
        self.stem_type, self.kernel_size = stem_type, kernel_size
        dims = [int(embed_dim * 2 ** i) for i in range(num_stages)]
        self.patch_embed = (ConvTokenizer if stem_type == 'conv' else PatchStem)(self.in_chans, dims[0], **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self._set_stages([NATStage(
            dims[max(i - 1, 0)], dims[i], depths[i], num_heads[i], kernel_size,
            dilations=None if dilations is None else dilations[i], downsample=downsample_type if i > 0 else None,
            drop_path=dpr[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, layer_scale=layer_scale,
            proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, **dd) for i in range(num_stages)], dims)
        self._set_head(dims[-1], LayerNorm2d(dims[-1], eps=_LN_EPS, **dd))
        self.apply(trunc_normal_init)  # the official init (convs and rpb tables keep their own)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Relative position bias tables take no weight decay (the official ``no_weight_decay_keywords``)."""
        return {n for n, _ in self.named_parameters() if n.endswith('.rpb')}


# ---------------------------------------------------------------------------------------------------------------
# Variants


def _alternating(depths: Sequence[int], dilations: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Per-block dilations of the published DiNAT / DiNAT_s schedules: 1, d, 1, d, ... in each stage."""
    return tuple(tuple(d if j % 2 else 1 for j in range(depth)) for depth, d in zip(depths, dilations))


# Architecture arguments (the official register functions' values; drop_path_rate is the official training default).
# Dilations: 224 inputs give stage maps 56/28/14/7 (dilations 8/4/2/1), 384 inputs 96/48/24/12 (13/6/3/1).
_NAT_D, _SWIN_D, _DIL, _DIL_384 = (3, 4, 18, 5), (2, 2, 18, 2), (8, 4, 2, 1), (13, 6, 3, 1)
_MINI = dict(depths=(3, 4, 6, 5), embed_dim=64, num_heads=(2, 4, 8, 16), mlp_ratio=3., drop_path_rate=0.2)
_TINY = dict(depths=_NAT_D, embed_dim=64, num_heads=(2, 4, 8, 16), mlp_ratio=3., drop_path_rate=0.2)
_SMALL = dict(depths=_NAT_D, embed_dim=96, num_heads=(3, 6, 12, 24), mlp_ratio=2., drop_path_rate=0.3)
_BASE = dict(depths=_NAT_D, embed_dim=128, num_heads=(4, 8, 16, 32), mlp_ratio=2., drop_path_rate=0.5, layer_scale=1e-5)
_LARGE = dict(depths=_NAT_D, embed_dim=192, num_heads=(6, 12, 24, 48), mlp_ratio=2., drop_path_rate=0.35)
_S = dict(stem_type='patch', downsample_type='merge', mlp_ratio=4., depths=_SWIN_D)  # DiNAT_s: Swin's layout
_S_LARGE = dict(_S, embed_dim=192, num_heads=(6, 12, 24, 48), drop_path_rate=0.35)

_NAT_URL = 'https://shi-labs.com/projects/nat/checkpoints/CLS/'
_URL = 'https://shi-labs.com/projects/dinat/checkpoints/'
_384 = dict(input_size=(3, 384, 384), crop_pct=1.0)
_IN22K = dict(num_classes=21841, notes=('ImageNet-22k head; the class count is not stated by the authors '
                                        '(21841 as Swin\'s ImageNet-22k releases)',))
_CFG = dict(license='mit', origin_url='https://github.com/SHI-Labs/Neighborhood-Attention-Transformer')
_DINAT_CFG = dict(_CFG, paper_ids='arXiv:2209.15001', paper_name='Dilated Neighborhood Attention Transformer')


def _in1k(path: str) -> dict[str, dict[str, Any]]:
    return {'in1k': dict(url=_URL + path)}


# The default weights of a file holding raw and EMA weights are the raw ones: the authors trained without EMA (timm's
# train.py, model_ema off in every official config), released plain state dicts, and measured their tables on those.
register(Family('nat', __name__, NAT, ema=False, cfg=dict(_CFG, first_conv='patch_embed.proj.0',
                                                          paper_ids='arXiv:2204.07143',
                                                          paper_name='Neighborhood Attention Transformer'),
    variants=dict(
        nat_mini=Variant('NAT-Mini: 20M params, 2.7 GFLOPs at 224.', _MINI,
                         {'in1k': dict(url=_NAT_URL + 'nat_mini.pth')}),
        nat_tiny=Variant('NAT-Tiny: 28M params, 4.3 GFLOPs at 224.', _TINY,
                         {'in1k': dict(url=_NAT_URL + 'nat_tiny.pth')}),
        nat_small=Variant('NAT-Small: 51M params, 7.8 GFLOPs at 224 (layer scale).', dict(_SMALL, layer_scale=1e-5),
                          {'in1k': dict(url=_NAT_URL + 'nat_small.pth')}),
        nat_base=Variant('NAT-Base: 90M params, 13.7 GFLOPs at 224 (layer scale).', _BASE,
                         {'in1k': dict(url=_NAT_URL + 'nat_base.pth')}),
    )))

register(Family('dinat', __name__, NAT, ema=False, cfg=dict(_DINAT_CFG, first_conv='patch_embed.proj.0'), variants=dict(
    dinat_mini=Variant('DiNAT-Mini: NAT-Mini with NA / dilated NA alternating.',
                       dict(_MINI, dilations=_alternating(_MINI['depths'], _DIL)),
                       _in1k('imagenet1k/dinat_mini_in1k_224.pth')),
    dinat_tiny=Variant('DiNAT-Tiny: NAT-Tiny with NA / dilated NA alternating.',
                       dict(_TINY, dilations=_alternating(_NAT_D, _DIL)), _in1k('imagenet1k/dinat_tiny_in1k_224.pth')),
    dinat_small=Variant('DiNAT-Small: NAT-Small with NA / dilated NA alternating, without layer scale.',
                        dict(_SMALL, dilations=_alternating(_NAT_D, _DIL)),
                        _in1k('imagenet1k/dinat_small_in1k_224.pth')),
    dinat_base=Variant('DiNAT-Base: NAT-Base with NA / dilated NA alternating (layer scale).',
                       dict(_BASE, dilations=_alternating(_NAT_D, _DIL)), _in1k('imagenet1k/dinat_base_in1k_224.pth')),
    dinat_large=Variant('DiNAT-Large: 200M params, ImageNet-22k pre-trained.',
                        dict(_LARGE, dilations=_alternating(_NAT_D, _DIL)), {
                            'in22k_ft_in1k': dict(url=_URL + 'imagenet1k/dinat_large_in22k_in1k_224.pth'),
                            'in22k': dict(_IN22K, url=_URL + 'imagenet22k/dinat_large_in22k_224.pth')}),
    dinat_large_384=Variant('DiNAT-Large at 384: kernel 7, dilations 13 / 6 / 3 / 1 for the larger stage maps.',
                            dict(_LARGE, dilations=_alternating(_NAT_D, _DIL_384)), {
                                'in22k_ft_in1k': dict(_384, url=_URL + 'imagenet1k/dinat_large_in22k_in1k_384.pth')}),
    dinat_large_384_11x11=Variant(
        'DiNAT-Large at 384: kernel 11, dilations 8 / 4 / 2 / 1.',
        dict(_LARGE, kernel_size=11, dilations=_alternating(_NAT_D, _DIL)), {
            'in22k_ft_in1k': dict(_384, url=_URL + 'imagenet1k/dinat_large_in22k_in1k_384_11x11.pth'),
            # the ImageNet-22k 7x7 weights with RPB bicubic-resized to 11x11 by the authors: a 384 fine-tuning start
            'in22k': dict(_IN22K, url=_URL + 'imagenet22k/dinat_large_in22k_224_11x11interp.pth')}),
)))

register(Family('dinat_s', __name__, NAT, ema=False, cfg=dict(_DINAT_CFG, first_conv='patch_embed.proj'), variants=dict(
    dinat_s_tiny=Variant('DiNAT_s-Tiny: Swin-T layout with NA / dilated NA in place of W-MSA / SW-MSA.',
                         dict(_S, depths=(2, 2, 6, 2), embed_dim=96, num_heads=(3, 6, 12, 24), drop_path_rate=0.2,
                              dilations=_alternating((2, 2, 6, 2), _DIL)),
                         _in1k('imagenet1k/dinat_s_tiny_in1k_224.pth')),
    dinat_s_small=Variant('DiNAT_s-Small: Swin-S layout with NA / dilated NA.',
                          dict(_S, embed_dim=96, num_heads=(3, 6, 12, 24), drop_path_rate=0.3,
                               dilations=_alternating(_SWIN_D, _DIL)), _in1k('imagenet1k/dinat_s_small_in1k_224.pth')),
    dinat_s_base=Variant('DiNAT_s-Base: Swin-B layout with NA / dilated NA.',
                         dict(_S, embed_dim=128, num_heads=(4, 8, 16, 32), drop_path_rate=0.5,
                              dilations=_alternating(_SWIN_D, _DIL)), _in1k('imagenet1k/dinat_s_base_in1k_224.pth')),
    dinat_s_large=Variant('DiNAT_s-Large: Swin-L layout with NA / dilated NA, ImageNet-22k pre-trained.',
                          dict(_S_LARGE, dilations=_alternating(_SWIN_D, _DIL)), {
                              'in22k_ft_in1k': dict(url=_URL + 'imagenet1k/dinat_s_large_in1k_224.pth'),
                              'in22k': dict(_IN22K, url=_URL + 'imagenet22k/dinat_s_large_in22k_224.pth')}),
    dinat_s_large_384=Variant('DiNAT_s-Large at 384: dilations 13 / 6 / 3 / 1.',
                              dict(_S_LARGE, dilations=_alternating(_SWIN_D, _DIL_384)), {
                                  'in22k_ft_in1k': dict(_384, url=_URL + 'imagenet1k/dinat_s_large_in1k_384.pth')}),
)))
