"""GLNet: hierarchical backbones of GLMix blocks (soft-clustered global slots + a local depthwise-conv branch).

Paper: `Revisiting the Integration of Convolution and Attention for Vision Backbone` (NeurIPS 2024) -
https://arxiv.org/abs/2411.14429. Official code and weights (Apache-2.0): https://github.com/rayleizhu/GLMix

* GLMix block (NCHW): optional conv position embedding (dw 3x3), then on the LayerNorm2d-normalised map
  - global branch: 64 slots initialised by 8x8 adaptive average pooling of the map (or learnable ``init_slots``),
    soft clustering (each slot a softmax over tokens of ``slot_scale * cos(slot, token)``), multi-head attention
    among the slots (``relation_mha``, :class:`MultiheadAttention`, ``nn.MultiheadAttention``'s parameter layout),
    dispatch back (each token a softmax over slots of the same logits). Clustering and dispatch are one-head
    cross-attentions over the token / slot sets: :func:`ops.dense_attention`, with ``slot_scale`` folded into the
    normalised queries (it keeps its gradient);
  - local branch: 1x1 -> depthwise 5x5 -> 1x1 conv; the two branches are summed;
  then a conv MLP (1x1, optional residual dw 3x3, GELU, 1x1), both with optional LayerScale.
* MHSA blocks: global multi-head self-attention (:func:`ops.dense_attention`) in NLC (``mha``, GLNet-STL stage 4) or
  with a BatchNorm conv MLP on NCHW maps (``mha_nchw``; ``glmix.mha_nchw`` stages alternate GLMix / MHSA).
* Stems: 4x4 patches + BN, BN + 2x2 convs between stages (STL), or overlapping 3x3 stride-2 convs (4G/9G/16G).
* ``*_tklb`` variants add the token-labelling head: logits = head(mean) + 0.5 * max over tokens of aux_head(token),
  the official inference output. The official training forward (in-model CutMix returning dense token logits for
  the token-labelling loss) is not reproduced: trained here, the combined logits are trained.

Any input size (every op is size-agnostic; maps smaller than 8x8 give repeated pooled slots, as in the official
code). Differences from the official module layout (``GLNet.checkpoint_layout`` maps official checkpoints onto ours):
``downsample_layers.0`` -> ``stem``, ``downsample_layers.{i}`` -> ``stages.{i}.downsample``, ``head`` ->
``head.fc``, ``tklb_aux_head`` -> ``head.aux_head``; block parameters keep their official names.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d

import ops

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, Stage, check_image, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['GLNet', 'GLMixBlock', 'MultiheadAttention']

_LN_EPS = 1e-6  # timm's LayerNorm2d default and the official MHSA LayerNorm


class MultiheadAttention(nn.Module):
    """Multi-head self-attention on ``[B, N, C]`` with ``nn.MultiheadAttention``'s parameters and init.

    ``in_proj_weight`` ``[3C, C]`` (q, k, v rows, heads contiguous in each), ``in_proj_bias``, ``out_proj``; the
    attention itself is :func:`ops.dense_attention` (no attention dropout, as every GLNet configuration).
    """

    def __init__(self, embed_dim: int, num_heads: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim {embed_dim} must be divisible by num_heads {num_heads}')
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **dd))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **dd))
        self.out_proj = nn.Linear(embed_dim, embed_dim, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, token_grid=None) -> torch.Tensor:
        """``token_grid``: where the N tokens lie (``(H, W)``, or a token set's name), for attention maps."""
        B, N, C = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(B, N, 3, self.num_heads, -1).unbind(2)
        return self.out_proj(ops.dense_attention(q, k, v, token_grid=token_grid).reshape(B, N, C))


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` shaped ``[C]`` (NLC) or ``[1, C, 1, 1]`` (NCHW), as the official checkpoints."""

    def __init__(self, dim: int, init_value: float, nchw: bool, device=None, dtype=None):
        super().__init__()
        shape = (1, dim, 1, 1) if nchw else (dim,)
        self.gamma = nn.Parameter(torch.full(shape, float(init_value), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x


class ResDWConv(nn.Conv2d):
    """``x + dwconv(x)`` (the official ``ResDWConvNCHW``: a Conv2d, so its parameters are ``weight``/``bias``)."""

    def __init__(self, dim: int, kernel_size: int = 3, device=None, dtype=None):
        super().__init__(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def _conv_mlp(dim: int, mlp_ratio: float, mlp_dw: bool, dd: dict) -> nn.Sequential:
    hidden = int(mlp_ratio * dim)
    return nn.Sequential(nn.Conv2d(dim, hidden, 1, **dd), ResDWConv(hidden, 3, **dd) if mlp_dw else nn.Identity(),
                         nn.GELU(), nn.Conv2d(hidden, dim, 1, **dd))


def _layer_scale(dim: int, init_value: float, nchw: bool, dd: dict) -> nn.Module:
    return LayerScale(dim, init_value, nchw, **dd) if init_value > 0 else nn.Identity()


class GLMixBlock(nn.Module):
    """GLMix block on NCHW maps (see the module docstring).

    Args:
        dim: channels; num_heads: heads of the slot attention.
        num_slots: slots (a square number for ``slot_init='ada_avgpool'``).
        slot_init: ``'ada_avgpool'`` (pooled from the map) or ``'param'`` (learnable ``init_slots``).
        local_dw_ks: local-branch depthwise kernel (0: no local branch).
        mlp_ratio, mlp_dw: MLP hidden width / dim, and the residual depthwise 3x3 in it.
        cpe_ks: conv position embedding kernel (0: none). layerscale: LayerScale init (<= 0: none).
    """

    def __init__(self, dim: int, num_heads: int, num_slots: int = 64, slot_init: str = 'ada_avgpool',
                 local_dw_ks: int = 5, mlp_ratio: float = 4., mlp_dw: bool = False, cpe_ks: int = 0,
                 layerscale: float = -1., drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if slot_init not in ('ada_avgpool', 'param'):
            raise ValueError(f"slot_init must be 'ada_avgpool' or 'param', got {slot_init!r}")
        self.slot_init = slot_init
        self.slot_scale = nn.Parameter(torch.tensor(dim ** -0.5, **dd))
        if cpe_ks > 0:
            self.pos_conv = nn.Conv2d(dim, dim, cpe_ks, padding=cpe_ks // 2, groups=dim, **dd)
        if slot_init == 'param':
            self.init_slots = nn.Parameter(torch.empty(1, num_slots, dim, **dd))
            nn.init.normal_(self.init_slots, std=.02)
        else:
            self.pool_size = math.isqrt(num_slots)
            if self.pool_size ** 2 != num_slots:
                raise ValueError(f'num_slots must be a square number with ada_avgpool slots, got {num_slots}')
        self.norm1 = LayerNorm2d(dim, eps=_LN_EPS, **dd)
        self.relation_mha = MultiheadAttention(dim, num_heads, **dd)
        self.feature_conv = nn.Sequential(
            nn.Conv2d(dim, dim, 1, **dd),
            nn.Conv2d(dim, dim, local_dw_ks, padding=local_dw_ks // 2, groups=dim, **dd),
            nn.Conv2d(dim, dim, 1, **dd),
        ) if local_dw_ks > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim, eps=_LN_EPS, **dd)
        self.mlp = _conv_mlp(dim, mlp_ratio, mlp_dw, dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.ls1 = _layer_scale(dim, layerscale, True, dd)
        self.ls2 = _layer_scale(dim, layerscale, True, dd)

    def mix(self, x: torch.Tensor, init_slots: torch.Tensor) -> torch.Tensor:
        """Global (cluster, slot attention, dispatch) + local branch of a normalised NCHW map."""
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2).unsqueeze(2)  # [B, HW, 1, C]: one head over all channels
        slots_n = F.normalize(init_slots, dim=-1).expand(B, -1, -1).unsqueeze(2)
        tokens_n = F.normalize(tokens, dim=-1)
        # logits[s, l] = slot_scale * cos(slot s, token l); softmax over tokens, then over slots
        slots = ops.dense_attention(self.slot_scale * slots_n, tokens_n, tokens, scale=1., token_grid=('slots', (H, W)))
        slots = self.relation_mha(slots.squeeze(2), token_grid='slots').unsqueeze(2)
        out = ops.dense_attention(self.slot_scale * tokens_n, slots_n, slots, scale=1., token_grid=((H, W), 'slots'))
        return out.squeeze(2).transpose(1, 2).reshape(B, C, H, W) + self.feature_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slot_init == 'ada_avgpool':  # pooled before the position embedding, as the official block
            init_slots = ops.adaptive_avg_pool2d(x, self.pool_size).flatten(2).transpose(1, 2)
        else:
            init_slots = self.init_slots
        if hasattr(self, 'pos_conv'):
            x = x + self.pos_conv(x)
        x = x + self.drop_path(self.ls1(self.mix(self.norm1(x), init_slots)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class MHSABlock(nn.Module):
    """Pre-norm MHSA block on the NCHW map's tokens: LayerNorm, attention, LayerNorm, linear MLP (official
    ``MHSA_Block``, which takes the NLC tokens)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., layerscale: float = -1.,
                 drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        hidden = int(mlp_ratio * dim)
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mha_op = MultiheadAttention(dim, num_heads, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, **dd), nn.GELU(), nn.Linear(hidden, dim, **dd))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.ls1 = _layer_scale(dim, layerscale, False, dd)
        self.ls2 = _layer_scale(dim, layerscale, False, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path(self.ls1(self.mha_op(self.norm1(t), (H, W))))
        t = t + self.drop_path(self.ls2(self.mlp(self.norm2(t))))
        return t.transpose(1, 2).reshape(B, C, H, W)


class MHSANCHWBlock(nn.Module):
    """MHSA on NCHW maps: conv position embedding, LayerNorm + attention on tokens, LayerNorm2d + conv MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., mlp_dw: bool = False, cpe_ks: int = 0,
                 layerscale: float = -1., drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if cpe_ks > 0:
            self.pos_conv = nn.Conv2d(dim, dim, cpe_ks, padding=cpe_ks // 2, groups=dim, **dd)
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mha_op = MultiheadAttention(dim, num_heads, **dd)
        self.norm2 = LayerNorm2d(dim, eps=_LN_EPS, **dd)
        self.mlp = _conv_mlp(dim, mlp_ratio, mlp_dw, dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.ls1 = _layer_scale(dim, layerscale, False, dd)
        self.ls2 = _layer_scale(dim, layerscale, True, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, 'pos_conv'):
            x = x + self.pos_conv(x)
        B, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path(self.ls1(self.mha_op(self.norm1(t), (H, W))))
        x = t.transpose(1, 2).reshape(B, C, H, W)
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


_MIXING_MODES = ('glmix', 'mha', 'mha_nchw', 'glmix.mha_nchw')


def _stage(dim: int, depth: int, num_heads: int, mixing_mode: str, drop_path: Sequence[float],
           downsample: nn.Module | None = None, num_slots: int = 64, slot_init: str = 'ada_avgpool',
           local_dw_ks: int = 5, mlp_ratio: float = 4., mlp_dw: bool = False, cpe_ks: int = 0,
           layerscale: float = -1., device=None, dtype=None) -> Stage:
    """Optional downsample, then ``depth`` blocks of one mixing mode; NCHW in and out (the blocks too)."""
    dd = {'device': device, 'dtype': dtype}
    if mixing_mode not in _MIXING_MODES:
        raise ValueError(f'mixing_mode must be one of {_MIXING_MODES}, got {mixing_mode!r}')
    common = dict(mlp_ratio=mlp_ratio, layerscale=layerscale, **dd)

    def block(i: int) -> nn.Module:
        if mixing_mode == 'mha':
            return MHSABlock(dim, num_heads, drop_path=drop_path[i], **common)
        if mixing_mode == 'mha_nchw' or (mixing_mode == 'glmix.mha_nchw' and i % 2):
            return MHSANCHWBlock(dim, num_heads, mlp_dw=mlp_dw, cpe_ks=cpe_ks, drop_path=drop_path[i], **common)
        return GLMixBlock(dim, num_heads, num_slots, slot_init, local_dw_ks, mlp_dw=mlp_dw, cpe_ks=cpe_ks,
                          drop_path=drop_path[i], **common)
    return Stage(downsample, [block(i) for i in range(depth)], nhwc=False)


def _stem(in_chans: int, dim: int, overlapped: bool, dd: dict) -> nn.Sequential:
    if overlapped:  # index 0 is the official (disabled) dual-patch-norm slot, kept for the checkpoint keys
        return nn.Sequential(nn.Identity(), nn.Conv2d(in_chans, dim // 2, 3, 2, 1, **dd),
                             nn.BatchNorm2d(dim // 2, **dd), nn.GELU(), nn.Conv2d(dim // 2, dim, 3, 2, 1, **dd),
                             nn.BatchNorm2d(dim, **dd))
    return nn.Sequential(nn.Conv2d(in_chans, dim, 4, 4, **dd), nn.BatchNorm2d(dim, **dd))


def _transition(dim: int, out_dim: int, overlapped: bool, norm_first: bool, dd: dict) -> nn.Sequential:
    conv = nn.Conv2d(dim, out_dim, 3, 2, 1, **dd) if overlapped else nn.Conv2d(dim, out_dim, 2, 2, **dd)
    if norm_first:
        return nn.Sequential(nn.BatchNorm2d(dim, **dd), conv)
    return nn.Sequential(conv, nn.BatchNorm2d(out_dim, **dd))


class GLNetHead(nn.Module):
    """Global average pool + ``fc``; with ``aux`` also the token-labelling ``aux_head`` (+ 0.5 * its token max)."""

    def __init__(self, dim: int, num_classes: int, pool_type: str = 'avg', aux: bool = False, drop_rate: float = 0.,
                 device=None, dtype=None):
        super().__init__()
        self.aux, self.in_features = aux, dim
        self.drop = nn.Dropout(drop_rate)
        self.reset(num_classes, pool_type, device=device, dtype=dtype)

    def reset(self, num_classes: int, pool_type: str | None = None, in_features: int | None = None, device=None,
              dtype=None) -> None:
        """timm's ``ClassifierHead.reset``: a new classifier (and pooling, unless None) on ``in_features``."""
        dim = self.in_features = in_features or self.in_features
        if pool_type is not None:
            if pool_type not in ('avg', ''):
                raise ValueError(f"GLNet pools with 'avg' (or '' for none), got global_pool={pool_type!r}")
            self.pool_type = pool_type
        dd = {'device': device, 'dtype': dtype}
        self.fc = nn.Linear(dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.aux_head = nn.Linear(dim, num_classes, **dd) if self.aux and num_classes > 0 else None
        self.train(self.training)  # new layers follow the head's mode

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.pool_type:
            return x if pre_logits else self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        pooled = self.drop(x.mean((2, 3)))
        if pre_logits:
            return pooled
        out = self.fc(pooled)
        if self.aux_head is not None:
            out = out + 0.5 * self.aux_head(x.flatten(2).transpose(1, 2)).amax(1)
        return out


class GLNet(HierarchicalModel):
    """GLNet.

    Args:
        depths: blocks per stage. embed_dims: widths per stage. head_dim: channels per attention head.
        mlp_ratios: MLP hidden width / width, per stage.
        mixing_modes: per stage, 'glmix', 'mha' (NLC MHSA blocks), 'mha_nchw' or 'glmix.mha_nchw' (alternating).
        local_dw_ks: GLMix local-branch kernel. slot_init: 'ada_avgpool' or 'param'. num_slots: slots per block.
        cpe_ks: conv position embedding kernel (0: none). mlp_dw: residual dw 3x3 in the conv MLPs.
        overlapped_stem: 3x3 stride-2 conv stem / transitions (4G/9G/16G) instead of 4x4 / 2x2 patches (STL).
        norm_first_transition: BatchNorm before the transition conv (official ``transition_layout='norm.proj'``).
        layerscale: LayerScale init (<= 0: none). token_label_head: the ``*_tklb`` auxiliary head.
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool`` ('avg' or ''), ``drop_rate``, ``device``,
            ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    stem_pattern = r'^stem'
    # The official layout: ``downsample_layers`` (0: the stem), ``head``, ``tklb_aux_head``
    checkpoint_layout = Layout(
        name='GLNet', marker=r'\.(?:relation_mha|mha_op)\.in_proj_weight$',
        summary=stage_summary('norm2.weight'), classifier=('head.fc', 'head.aux_head'),
        renames=(('downsample_layers.0.', 'stem.'), ('downsample_layers.{i}.', 'stages.{i}.downsample.'),
                 ('tklb_aux_head.', 'head.aux_head.'), *HEAD_FC))

    def __init__(
            self,
            depths: Sequence[int] = (2, 2, 6, 2),
            embed_dims: Sequence[int] = (96, 192, 384, 768),
            head_dim: int = 32,
            mlp_ratios: Sequence[float] = (4, 4, 4, 4),
            mixing_modes: Sequence[str] = ('glmix', 'glmix', 'glmix', 'mha'),
            local_dw_ks: int = 5,
            slot_init: str = 'ada_avgpool',
            num_slots: int = 64,
            cpe_ks: int = 0,
            mlp_dw: bool = False,
            overlapped_stem: bool = False,
            norm_first_transition: bool = True,
            layerscale: float = -1.,
            token_label_head: bool = False,
            drop_path_rate: float = 0.,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, embed_dims=embed_dims, mlp_ratios=mlp_ratios, mixing_modes=mixing_modes)
        self.stem = _stem(self.in_chans, embed_dims[0], overlapped_stem, dd)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages = []
        for i in range(n):
            down = None if i == 0 else _transition(embed_dims[i - 1], embed_dims[i], overlapped_stem,
                                                   norm_first_transition, dd)
            stages.append(_stage(
                embed_dims[i], depths[i], embed_dims[i] // head_dim, mixing_modes[i],
                dpr[sum(depths[:i]):sum(depths[:i + 1])], downsample=down, num_slots=num_slots, slot_init=slot_init,
                local_dw_ks=local_dw_ks, mlp_ratio=mlp_ratios[i], mlp_dw=mlp_dw, cpe_ks=cpe_ks,
                layerscale=layerscale, **dd))
        self._set_stages(stages, embed_dims)
        self._set_head(embed_dims[-1], nn.BatchNorm2d(embed_dims[-1], **dd), GLNetHead(
            embed_dims[-1], self.num_classes, self.global_pool, aux=token_label_head, drop_rate=self.drop_rate, **dd))
        self.apply(trunc_normal_init)  # the official init (attention out_proj included)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans)
        return self.stem(x)


# ---------------------------------------------------------------------------------------------------------------
# Variants

_STL = dict(depths=(2, 2, 6, 2), embed_dims=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4),
            mixing_modes=('glmix', 'glmix', 'glmix', 'mha'), norm_first_transition=True)
_G = dict(depths=(4, 4, 18, 4), mlp_ratios=(3, 3, 3, 3), mixing_modes=('glmix', 'glmix', 'glmix.mha_nchw', 'mha_nchw'),
          cpe_ks=3, overlapped_stem=True, norm_first_transition=False, mlp_dw=True)
_URL = 'https://api.onedrive.com/v1.0/shares/u!{}/root/content'


def _onedrive(share: str, **cfg: Any) -> dict[str, dict[str, Any]]:
    return {'in1k': dict(cfg, url=_URL.format(share))}


# The official entrypoints (models/glnet.py, models/glnet_tklb.py); drop_path_rate: the official training values
# (scripts/train_*.sh) are set by the recipes, not here. Default weights: the official loader reads `model_ema` for
# GLNet-16G only ("the ema checkpoint has slightly better performance (85.0) than that of regular checkpoint
# (84.9)"), `model` for every other release.
register(Family(
    'glnet', __name__, GLNet, ema=frozenset({'glnet_16g'}), cache_per_model=True,
    cfg=dict(first_conv='stem.1', license='apache-2.0', origin_url='https://github.com/rayleizhu/GLMix',
             paper_ids='arXiv:2411.14429',
             paper_name='Revisiting the Integration of Convolution and Attention for Vision Backbone'),
    variants=dict(
        glnet_stl=Variant(
            'GLNet-STL (Swin-T layout, GLMix stages 1-3, MHSA stage 4): 30.3M params, 4.4 GFLOPs at 224.', _STL,
            _onedrive('aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5QkZhQUlMRU11X2R0YmJWP2U9OUdoaGkz',
                      first_conv='stem.0')),
        glnet_stl_paramslot=Variant(
            'GLNet-STL with learnable initial slots: 30.5M params, 4.4 GFLOPs at 224.', dict(_STL, slot_init='param'),
            _onedrive('aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5RzBlYXQ1ekNFOXVwY1FSP2U9dm1ibW8x',
                      first_conv='stem.0')),
        glnet_4g=Variant(
            'GLNet-4G: 27.0M params, 4.5 GFLOPs at 224.', dict(_G, embed_dims=(64, 128, 256, 512)),
            _onedrive('aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5RzlEalNfQU1xbkpRaVgxP2U9dE9raEhQ')),
        glnet_9g=Variant(
            'GLNet-9G: 60.0M params, 9.7 GFLOPs at 224.', dict(_G, embed_dims=(96, 192, 384, 768)),
            _onedrive('aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5RUdGUTZrZldWLXdWWmVpP2U9d1d3Ujh6')),
        glnet_16g=Variant(
            'GLNet-16G (LayerScale 1e-4; EMA release weights): 106.1M params, 16.7 GFLOPs at 224.',
            dict(_G, embed_dims=(128, 256, 512, 1024), layerscale=1e-4),
            _onedrive('aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5amFCeEMzaC1COENIV01tP2U9R2ZSMGtn')),
        glnet_4g_tklb=Variant(
            'GLNet-4G trained with token labelling (auxiliary token head): 27.5M params, 4.5 GFLOPs at 224.',
            dict(_G, embed_dims=(64, 128, 256, 512), token_label_head=True),
            _onedrive('aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5QVdjT2RsVFVhMkozdnNYP2U9d0U0Y2gx')),
        glnet_9g_tklb=Variant(
            'GLNet-9G trained with token labelling (auxiliary token head): 60.8M params, 9.7 GFLOPs at 224.',
            dict(_G, embed_dims=(96, 192, 384, 768), token_label_head=True),
            _onedrive('aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5blBFY2ctZkM3WkRDTUV0P2U9Ynd1ZmVS')),
    )))
