"""LITv2: hierarchical vision transformers with HiLo attention and deformable token merging.

Paper: `Fast Vision Transformers with HiLo Attention` (NeurIPS 2022) - https://arxiv.org/abs/2205.13213
Official code and weights (Apache-2.0): https://github.com/ziplab/LITv2

* a 4x4 patch stem; stages 1-2 are MLP-only blocks (LayerNorm, then an MLP with a depthwise 3x3 conv after its
  first linear layer); stages 3-4 add HiLo attention in front of that MLP;
* HiLo splits the heads: ``h_heads = heads - int(heads * alpha)`` Hi-Fi heads attend inside non-overlapping
  ``s x s`` windows (:func:`ops.window_attention`), the other ``l_heads`` (Lo-Fi) let every token attend to the
  keys / values of the ``s x s`` average-pooled map (:func:`ops.dense_attention`, N queries over N / s^2 keys);
  ``s = 1`` is plain multi-head self-attention over all heads (stage 4). No attention code of our own;
* DTM (deformable token merging) between stages: a 2x2 stride-2 deformable conv (offsets from a 2x2 stride-2 conv,
  torchvision's ``deform_conv2d`` with the official ``DeformConv2dPack`` layout), BatchNorm, GELU.

Any input size, square or not, and nothing compiled (the official classification code needs square inputs of its
build size, a custom-built DCN extension and apex). Where sizes do not divide, this model does what the official
detection / segmentation backbone does, so the outputs equal it at every size:

* the stem zero-pads the image to a multiple of 4 (bottom / right);
* HiLo zero-pads its (normalised) input to a multiple of ``s`` before the projections, so padded tokens enter the
  Hi-Fi windows and the Lo-Fi pooling as zero vectors (their keys are the projection biases), and crops back;
* DTM drops an odd last row / column (a 2x2 stride-2 conv without padding), so inputs need >= 29 px per side.

Differences from the official module layout (``LITv2.checkpoint_layout`` maps official checkpoints onto ours):
    * a stage merges tokens at its start (timm's layout): ``layers.{i}.downsample`` -> ``stages.{i+1}.downsample``;
    * ``layers`` -> ``stages``, ``head`` -> ``head.fc``; stages take and return NCHW maps (NHWC inside).
HiLo takes no attention / projection dropout (the official module accepts and ignores them).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, calculate_drop_path_rates, register_notrace_module
from torchvision.ops import deform_conv2d

import ops

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, PatchStem, Stage, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['LITv2', 'HiLo', 'DeformConv2dPack']

_LN_EPS = 1e-5  # nn.LayerNorm's default, used everywhere by the official models
_MIN_SIZE = 29  # ceil(29 / 4) = 8 tokens survive three 2x2 stride-2 mergings as 1


@register_notrace_module  # torch.fx: a leaf (window padding and pooled grid from the map size)
class HiLo(nn.Module):
    """HiLo attention on an NHWC token map; parameters ``h_qkv``/``h_proj`` (Hi-Fi), ``l_q``/``l_kv``/``l_proj``.

    Args:
        dim: channels (``num_heads * head_dim``).
        num_heads: attention heads, split into ``int(num_heads * alpha)`` Lo-Fi and the rest Hi-Fi heads.
        window_size: ``s``, the Hi-Fi window and the Lo-Fi pooling size; 1 makes every head a Lo-Fi head over the
            unpooled map (plain multi-head self-attention), as in the official module.
        alpha: fraction of Lo-Fi heads.
        qkv_bias: bias in the q / kv / qkv projections (the output projections always have one).
        qk_scale: logit scale; ``None`` is ``head_dim ** -0.5``.
    """

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 2, alpha: float = 0.5,
                 qkv_bias: bool = False, qk_scale: float | None = None, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f'window_size must be an int >= 1, got {window_size!r}')
        if not 0. <= alpha <= 1.:
            raise ValueError(f'alpha must be in [0, 1], got {alpha!r}')
        self.dim = dim
        self.head_dim = dim // num_heads
        self.ws = window_size
        self.l_heads = num_heads if window_size == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim, self.h_dim = self.l_heads * self.head_dim, self.h_heads * self.head_dim
        self.scale = qk_scale or self.head_dim ** -0.5
        if self.l_heads:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias, **dd)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias, **dd)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim, **dd)
        if self.h_heads:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias, **dd)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        xp, _ = ops.pad_to_multiple(x, self.ws, dims=(1, 2))  # the official detection backbone's zero padding
        Hp, Wp = xp.shape[1], xp.shape[2]
        outs = []
        if self.h_heads:
            q, k, v = self.h_qkv(xp).view(B, Hp, Wp, 3, self.h_heads, self.head_dim).unbind(3)
            # divisible (the tokens were padded above): nothing to pad, so no mask ('zeros')
            hifi = ops.window_attention(q, k, v, self.ws, padding='zeros', scale=self.scale, token_grid=(H, W))
            outs.append(self.h_proj(ops.crop(hifi, (H, W), dims=(1, 2)).reshape(B, H, W, self.h_dim)))
        if self.l_heads:
            # queries of padded tokens would be cropped away: only the real tokens query
            q = self.l_q(x).view(B, H * W, self.l_heads, self.head_dim)
            pooled = xp if self.ws == 1 else F.avg_pool2d(xp.permute(0, 3, 1, 2), self.ws).permute(0, 2, 3, 1)
            k, v = self.l_kv(pooled.reshape(B, -1, self.dim)).view(B, -1, 2, self.l_heads, self.head_dim).unbind(2)
            keys = (H, W) if self.ws == 1 else ops.TokenGrid(tuple(pooled.shape[1:3]), name='pooled')
            lofi = ops.dense_attention(q, k, v, scale=self.scale, token_grid=((H, W), keys))
            outs.append(self.l_proj(lofi.reshape(B, H, W, self.l_dim)))
        return torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]


class DWConv(nn.Module):
    """Depthwise 3x3 conv on an NHWC map (the official ``DWConv``; parameter ``dwconv``)."""

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class DWMlp(nn.Module):
    """fc1, depthwise 3x3 conv, GELU, fc2 on an NHWC map (the official ``DWMlp``)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.dwconv = DWConv(hidden, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, **dd)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class LITBlock(nn.Module):
    """Pre-norm block: HiLo attention (``has_msa``; absent in stages 1-2, the official ``ConvFFNBlock``) and DWMlp."""

    def __init__(self, dim: int, num_heads: int, has_msa: bool, window_size: int = 2, alpha: float = 0.9,
                 mlp_ratio: float = 4., qkv_bias: bool = True, qk_scale: float | None = None,
                 proj_drop: float = 0., drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if has_msa:
            self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
            self.attn = HiLo(dim, num_heads, window_size, alpha, qkv_bias=qkv_bias, qk_scale=qk_scale, **dd)
        self.has_msa = has_msa
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = DWMlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_msa:
            x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DeformConv2dPack(nn.Module):
    """Deformable conv whose offsets come from a plain conv of the same geometry (mmcv's / the official layout).

    ``conv_offset`` gives ``2 * kh * kw`` channels ordered ``(dy, dx)`` per kernel tap, taps row-major: exactly
    torchvision's ``deform_conv2d`` offset layout (one offset group), so the official weights apply unchanged.
    ``conv_offset`` starts at zero (a plain strided conv at initialisation), as in the official module.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **dd))
        self.bias = nn.Parameter(torch.empty(out_channels, **dd))
        self.conv_offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size, stride, padding, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.conv_offset(x)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding)


class DTM(nn.Module):
    """Deformable token merging: 2x2 stride-2 deformable conv to ``out_dim``, BatchNorm, GELU; NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        self.dconv = DeformConv2dPack(dim, out_dim, kernel_size=2, stride=2, device=device, dtype=dtype)
        self.norm_layer = nn.BatchNorm2d(out_dim, device=device, dtype=dtype)
        self.act_layer = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_layer(self.norm_layer(self.dconv(x)))


class LITv2(HierarchicalModel):
    """LITv2.

    Args:
        embed_dim: width of the first stage; stage ``i`` has ``embed_dim * 2 ** i`` channels.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        has_msa: per stage, whether its blocks have HiLo attention (official ``HAS_MSA``).
        window_sizes: per stage, HiLo's ``s`` (official ``LOCAL_WS``; unused where ``has_msa`` is 0).
        alpha: fraction of Lo-Fi heads.
        mlp_ratio: MLP hidden width / block width.
        qkv_bias: bias in the HiLo q / kv / qkv projections (the official config default, True).
        qk_scale: attention logit scale (``None``: head_dim ** -0.5).
        proj_drop_rate: dropout in the MLP (the official ``drop_rate``).
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (classifier dropout),
            ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    checkpoint_layout = Layout(
        name='LITv2', marker=r'\.downsample\.dconv\.conv_offset\.weight$',
        summary=stage_summary('norm2.weight', {'Lo-Fi widths per stage': 'attn.l_q.weight',
                                               'Hi-Fi widths per stage': 'attn.h_proj.weight'}),
        renames=(('layers.{i}.downsample.', 'stages.{i+1}.downsample.'), ('layers.', 'stages.'), *HEAD_FC))

    def __init__(
            self,
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            has_msa: Sequence[int] = (0, 0, 1, 1),
            window_sizes: Sequence[int] = (0, 0, 2, 1),
            alpha: float = 0.9,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            qk_scale: float | None = None,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.2,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        num_stages = stage_count(depths, num_heads=num_heads, has_msa=has_msa, window_sizes=window_sizes)
        dims = [int(embed_dim * 2 ** i) for i in range(num_stages)]
        self.patch_embed = PatchStem(self.in_chans, dims[0], min_size=_MIN_SIZE,
                                     why='three 2x2 stride-2 token mergings after the stride-4 stem', **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        # a stage merges tokens (DTM) at its start, then its blocks run on NHWC maps
        self._set_stages([Stage(DTM(dims[i - 1], dims[i], **dd) if i else None, [LITBlock(
            dims[i], num_heads[i], bool(has_msa[i]), window_sizes[i], alpha, mlp_ratio, qkv_bias, qk_scale,
            proj_drop_rate, rate, **dd) for rate in dpr[i]]) for i in range(num_stages)], dims)
        self._set_head(dims[-1], LayerNorm2d(dims[-1], eps=_LN_EPS, **dd))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the official init: truncated-normal linear weights with zero bias; the depthwise convs normal with
        # std sqrt(2 / fan_out) (fan_out = 9); the stem conv and DTM keep their own (PyTorch / DeformConv2dPack)
        if not trunc_normal_init(m) and isinstance(m, DWConv):
            nn.init.normal_(m.dwconv.weight, 0., math.sqrt(2. / 9))
            nn.init.zeros_(m.dwconv.bias)


# ---------------------------------------------------------------------------------------------------------------
# Variants

_URL = 'https://github.com/ziplab/LITv2/releases/download/v1.0/'
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5)

# The official configs (classification/configs/litv2-*.yaml over config.py's defaults); drop_path_rate is the
# official training value. The released files hold only `model` (the official configs train without EMA: config.py's
# TRAIN has no EMA option): raw weights by default.
register(Family(
    'litv2', __name__, LITv2, ema=False,
    cfg=dict(first_conv='patch_embed.proj', license='apache-2.0', origin_url='https://github.com/ziplab/LITv2',
             paper_ids='arXiv:2205.13213', paper_name='Fast Vision Transformers with HiLo Attention'),
    variants=dict(
        litv2_small=Variant('LITv2-S: 28M params, 3.7 GFLOPs at 224.',
                            dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
                            {'in1k': dict(url=_URL + 'litv2_s.pth')}),
        litv2_medium=Variant('LITv2-M: 49M params, 7.5 GFLOPs at 224.',
                             dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
                             {'in1k': dict(url=_URL + 'litv2_m.pth')}),
        litv2_base=Variant('LITv2-B: 87M params, 13.2 GFLOPs at 224.', _BASE,
                           {'in1k': dict(url=_URL + 'litv2_b.pth')}),
        # fine-tuned at 384 and evaluated without a center crop (the official TEST.CROP: False)
        litv2_base_384=Variant('LITv2-B fine-tuned at 384: 87M params, 39.7 GFLOPs.', _BASE, {
            'in1k': dict(url=_URL + 'litv2_b_384.pth', input_size=(3, 384, 384), crop_pct=1.0)}),
    )))
