"""L2ViT: alternating local window attention (LWA) and enhanced linear global attention (LGA) blocks.

Paper: `The Linear Attention Resurrection in Vision Transformer` - https://arxiv.org/abs/2501.16182
Official code and weights (MIT): https://github.com/ChuanyangZheng/L2ViT (``classification/models/l2vit.py``)

* a 2-conv stem (3x3 s2 -> BN -> ReLU -> 3x3 s2 -> BN, then LayerNorm; the image zero-padded to a multiple of 4);
  between stages LayerNorm, then a 2x2 stride-2 conv (the map zero-padded to even sizes);
* every stage alternates LWA (even blocks) and LGA (odd blocks), each starting with a depthwise 3x3 positional
  conv (CPE, residual) and ending with a LayerNorm -> MLP residual;
* LWA: LayerNorm -> 7x7 (12x12 for ``l2vit_base_384``) non-shifted window attention without relative-position bias
  (:class:`ops.WindowAttention2D`), a residual, a second CPE;
* LGA: LayerNorm -> linear attention (:func:`ops.linear_attention`: ReLU features, ``temperature * q (k^T v) /
  max(q . sum(k), 100)`` with a learnable per-head temperature, the state in fp32), a residual, then the LCM
  (local concentration module: LayerNorm -> depthwise 7x7 -> GELU -> BatchNorm -> depthwise 7x7) as a residual;
* final LayerNorm, average pool, classifier.

Any input size, as the official model: its LWA zero-pads the normalised tokens to a multiple of the window before
``qkv`` (padded keys carry the projection bias and stay unmasked) and crops after; ``window_padding='masked'``
instead masks the padded keys (every query sees only real tokens). Equal at sizes that divide by the window.

Differences from the official module layout (``L2ViT.checkpoint_layout`` maps official checkpoints onto ours):
    * ``downsample_layers.0.proj.proj`` / ``.norm`` -> ``patch_embed.proj`` / ``patch_embed.norm``;
      ``downsample_layers.{i}`` -> ``stages.{i}.downsample`` (a stage merges at its start, timm's layout);
    * ``stages.{i}.{j}`` -> ``stages.{i}.blocks.{j}``; ``head`` -> ``head.fc``. Stages take and return NCHW maps
      (NHWC inside). The official ``layer_scale_init_value`` is accepted there and ignored: there is none.
The released ``*-best-ema.pth`` files hold raw (``model``) and EMA (``model_ema``) weights; the official eval
(``main.py --eval true --resume``) loads ``model`` and its README quotes that run for the table's accuracy, so the
raw weights are the default (the family's ``ema``).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, Mlp, calculate_drop_path_rates

import ops

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, Stage, check_image, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['L2ViT', 'LinearAttention']

_LN_EPS = 1e-5  # nn.LayerNorm's default, used by every official norm
_CLAMP_MIN = 100.0  # the official denominator clamp ("makes training stable")


class CPE(nn.Module):
    """Conditional position encoding: ``x + dwconv3x3(x)`` on an NHWC map (parameter ``proj``)."""

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class LinearAttention(nn.Module):
    """L2ViT's linear global attention on an NHWC map: ``qkv``, per-head ``temperature`` ``[heads, 1, 1]``, ``proj``.

    ``proj(temperature * relu(q) (relu(k)^T v) / max(relu(q) . sum_N relu(k), 100))`` through
    :func:`ops.linear_attention` (state and normaliser in fp32 under autocast; the official code trains without
    AMP). The temperature starts at ``head_dim ** -0.5``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), self.head_dim ** -0.5, **dd))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x.reshape(B, H * W, C)).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(2)
        out = ops.linear_attention(q, k, v, feature_map='relu', key_reduce='sum', clamp_min=_CLAMP_MIN,
                                   scale=self.temperature, token_grid=(H, W))
        return self.proj(out.reshape(B, H, W, C))


class LCM(nn.Module):
    """Local concentration module on an NHWC map: depthwise 7x7 -> GELU -> BatchNorm -> depthwise 7x7."""

    def __init__(self, dim: int, kernel_size: int = 7, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim, **dd)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.bn(self.act(self.conv1(x.permute(0, 3, 1, 2)))))
        return x.permute(0, 2, 3, 1)


class LWABlock(nn.Module):
    """CPE -> LayerNorm -> window attention (residual) -> CPE -> LayerNorm -> MLP (residual), NHWC."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, drop_path: float = 0., window_padding: str = 'tokens', device=None,
                 dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.cpe = nn.ModuleList([CPE(dim, **dd), CPE(dim, **dd)])
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.attn = ops.WindowAttention2D(dim, num_heads, window_size, qkv_bias=qkv_bias, padding=window_padding,
                                          rel_pos_bias=False, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = self.cpe[1](x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LGABlock(nn.Module):
    """CPE -> LayerNorm -> linear attention -> LayerNorm (``norm3``) -> LCM -> LayerNorm -> MLP, residuals, NHWC."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.cpe = nn.ModuleList([CPE(dim, **dd)])
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.attn = LinearAttention(dim, num_heads, qkv_bias=qkv_bias, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **dd)
        self.norm3 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.local_mp = LCM(dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.local_mp(self.norm3(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stem(nn.Module):
    """Image zero-padded to a multiple of 4, 3x3 s2 -> BN -> ReLU -> 3x3 s2 -> BN (``proj.{0..4}``), LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.in_chans = in_chans
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, 3, 2, 1, **dd), nn.BatchNorm2d(embed_dim // 2, **dd), nn.ReLU(),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, 2, 1, **dd), nn.BatchNorm2d(embed_dim, **dd))
        self.norm = LayerNorm2d(embed_dim, eps=_LN_EPS, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans)
        # ops.pad_to_multiple: sizes torch.export simplifies (the "-x % 4" form nests Mod terms stage after stage)
        return self.norm(self.proj(ops.pad_to_multiple(x, 4, (2, 3))[0]))


class Downsample(nn.Module):
    """LayerNorm, zero-pad to even sizes, 2x2 stride-2 conv (the official ``PatchEmbed`` between stages)."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=_LN_EPS, device=device, dtype=dtype)
        self.proj = nn.Conv2d(dim, out_dim, 2, 2, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.proj(ops.pad_to_multiple(x, 2, (2, 3))[0])


class L2ViT(HierarchicalModel):
    """L2ViT.

    Args:
        embed_dims: width per stage.
        depths: blocks per stage (LWA and LGA alternate, LWA first).
        num_heads: attention heads per stage.
        window_size: LWA window (7; 12 for ``l2vit_base_384``).
        window_padding: how LWA pads maps that do not divide by the window: ``'tokens'`` (official: zero tokens
            before ``qkv``, unmasked) or ``'masked'`` (padded keys masked); see :class:`ops.WindowAttention2D`.
        mlp_ratio: MLP hidden width / block width.
        qkv_bias: bias in the ``qkv`` projections (the official blocks' default, True).
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (classifier dropout),
            ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    checkpoint_layout = Layout(
        name='L2ViT', marker=r'\.attn\.temperature$', summary=stage_summary('norm1.weight'),
        renames=(('downsample_layers.0.proj.proj.', 'patch_embed.proj.'),
                 ('downsample_layers.0.norm.', 'patch_embed.norm.'),
                 ('downsample_layers.{i}.', 'stages.{i}.downsample.'), ('stages.{s}.{b}.', 'stages.{s}.blocks.{b}.'),
                 *HEAD_FC))

    def __init__(
            self,
            embed_dims: Sequence[int] = (96, 192, 384, 768),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: int = 7,
            window_padding: str = 'tokens',
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_path_rate: float = 0.,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, embed_dims=embed_dims, num_heads=num_heads)
        if window_padding not in ('tokens', 'masked'):
            raise ValueError(f"window_padding must be 'tokens' (official) or 'masked', got {window_padding!r}")
        self.patch_embed = Stem(self.in_chans, embed_dims[0], **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        common = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, **dd)
        # a stage downsamples at its start, then LWA (even index) and LGA blocks alternate on NHWC maps
        self._set_stages([Stage(Downsample(embed_dims[i - 1], embed_dims[i], **dd) if i else None, [
            LWABlock(embed_dims[i], num_heads[i], window_size, drop_path=rate, window_padding=window_padding,
                     **common) if j % 2 == 0 else LGABlock(embed_dims[i], num_heads[i], drop_path=rate, **common)
            for j, rate in enumerate(dpr[i])]) for i in range(n)], embed_dims)
        self._set_head(embed_dims[-1], LayerNorm2d(embed_dims[-1], eps=_LN_EPS, **dd))
        # the official init (norms and temperatures as built; the [heads, 1, 1] temperatures are decayed, as in
        # the official optimizer)
        self.apply(partial(trunc_normal_init, types=(nn.Conv2d, nn.Linear)))


# ---------------------------------------------------------------------------------------------------------------
# Variants

_URL = 'https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/'
_BASE = dict(embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))

# l2vit.py's L2ViT_Tiny/Small/Base/Base_384. drop_path_rate: the official model default (0); the recipes under
# configs/imagenet/ set the training value. Default weights of a file holding both: the raw ones (`model`), which the
# official eval script evaluates.
register(Family(
    'l2vit', __name__, L2ViT, ema=False,
    cfg=dict(first_conv='patch_embed.proj.0', license='mit', origin_url='https://github.com/ChuanyangZheng/L2ViT',
             paper_ids='arXiv:2501.16182', paper_name='The Linear Attention Resurrection in Vision Transformer'),
    variants=dict(
        l2vit_tiny=Variant('L2ViT-T: 29M params, 4.7 GFLOPs at 224.',
                           dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
                           {'in1k': dict(url=_URL + 'L2ViT-Tiny-checkpoint-best-ema.pth')}),
        l2vit_small=Variant('L2ViT-S: 50M params, 9.0 GFLOPs at 224.',
                            dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
                            {'in1k': dict(url=_URL + 'L2ViT-Small-checkpoint-best-ema.pth')}),
        l2vit_base=Variant('L2ViT-B: 89M params, 15.9 GFLOPs at 224.', _BASE, {
            'in1k': dict(url=_URL + 'L2ViT-Base-checkpoint-best-ema.pth'),
            'in22k_ft_in1k': dict(url=_URL + 'L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth'),
            # the authors' own ImageNet-22K class order (their custom_map22kto1k.txt maps it to 1K)
            'in22k': dict(url=_URL + 'L2ViT-Base-22k-pretrain-checkpoint-best.pth', num_classes=21841)}),
        # fine-tuned at 384 and evaluated without a center crop (the official transform warps at >= 384)
        l2vit_base_384=Variant(
            'L2ViT-B at 384 with 12x12 windows (ImageNet-22K pre-trained): 89M params, 47.5 GFLOPs.',
            dict(_BASE, window_size=12), {'in22k_ft_in1k': dict(
                url=_URL + 'L2ViT-Base-22k21k-finetune-384-checkpoint-best.pth', input_size=(3, 384, 384),
                crop_pct=1.0)}),
    )))
