"""RAVLT: vision transformers with rank-augmented linear attention (RALA) in stages 1-2 and softmax attention after.

Paper: `Breaking the Low-Rank Dilemma of Linear Attention` (CVPR 2025) - https://arxiv.org/abs/2411.07635
Official code: https://github.com/qhfan/RALA (``classfication/RALA.py``); weights on the HF hub ``aldjalkdf/RAVLT``.

* a 4-conv stem (3x3 s2, two 3x3, 3x3 s2, BatchNorm between, GELU after the first three); a 3x3 stride-2 conv
  and BatchNorm between stages;
* every block: a depthwise 3x3 positional conv (residual), then LayerNorm -> attention and LayerNorm -> FFN
  (1x1 conv, GELU, depthwise 3x3 with a residual, 1x1 conv), each scaled by a layer-scale;
* attention from one 1x1 ``qkvo`` conv: q, k, v and an output gate o; LePE (depthwise 5x5 on v) is added to the
  attention output, then ``proj((attn + lepe) * o)``. Stages 1-2 (RALA, :func:`ops.linear_attention`): ELU+1
  features, keys re-weighted by the mean query, 2-D RoPE on the numerator, mean-key normaliser, state scaled by
  1/N. Stages 3-4 (the official ``VanillaSelfAttention``): RoPE on q and k, then :func:`ops.dense_attention`
  (SDPA: no N x N matrix in memory, where the official module materialises it);
* the head: 1x1 conv to 1024, BatchNorm, Swish, average pool, classifier.

The 2-D RoPE tables are rebuilt for each input's token grid from the stage's persistent ``angle`` buffer (in
float32 whatever the model dtype), so the model forwards at any input size as the official one does.

Differences from the official module layout (``RAVLT.checkpoint_layout`` maps official checkpoints onto ours):
    * a stage merges at its start (timm's layout): ``layers.{i}.downsample`` -> ``stages.{i+1}.downsample``;
    * ``layers`` -> ``stages``, ``RoPE.angle`` -> ``rope_angle``, ``norm{1,2}.norm`` -> ``norm{1,2}``;
    * the classifier is a Linear (``head.fc``; the official 1x1 conv ``head`` after pooling is the same map).
The official model functions take ``args=None`` (no kwargs): here every timm ``create_model`` kwarg works.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, calculate_drop_path_rates, register_notrace_module
from torch.utils.checkpoint import checkpoint

import ops

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, check_image, stage_count, trunc_normal_init
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['RAVLT', 'RALAttention']

_LN_EPS = 1e-6


@register_notrace_module  # torch.fx: a leaf (RoPE tables unpacked)
class RALAttention(nn.Module):
    """RALA (``linear=True``) or RoPE softmax attention on an NCHW map, with LePE and the output gate.

    Parameters ``qkvo`` (1x1 conv to 4 * dim: q, k, v, o, heads inside each), ``lepe`` (depthwise 5x5), ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, linear: bool, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.dim, self.num_heads, self.head_dim, self.linear = dim, num_heads, dim // num_heads, linear
        if self.head_dim % 4:
            raise ValueError(f'the 2-D RoPE needs a head_dim divisible by 4, got {self.head_dim}')
        self.qkvo = nn.Conv2d(dim, 4 * dim, 1, **dd)
        self.lepe = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim, **dd)
        self.proj = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v, o = self.qkvo(x).chunk(4, dim=1)
        lepe = self.lepe(v)
        q, k, v = (t.flatten(2).transpose(1, 2).unflatten(-1, (self.num_heads, self.head_dim)) for t in (q, k, v))
        if self.linear:
            out = ops.linear_attention(q, k, v, feature_map='elu+1', key_reweight=True, rope=rope,
                                       key_reduce='mean', eps=1e-6, scale=1.0 / (H * W), token_grid=(H, W))
        else:
            out = ops.dense_attention(ops.apply_rope(q, *rope), ops.apply_rope(k, *rope), v, token_grid=(H, W))
        out = out.flatten(2).transpose(1, 2).reshape(B, C, H, W)
        return self.proj((out + lepe) * o)


class FFN(nn.Module):
    """1x1 conv, GELU, depthwise 3x3 conv with a residual, 1x1 conv (the official ``FeedForwardNetwork``)."""

    def __init__(self, dim: int, hidden: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.fc1 = nn.Conv2d(dim, hidden, 1, **dd)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, **dd)
        self.fc2 = nn.Conv2d(hidden, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class RAVLTBlock(nn.Module):
    """Positional dw-conv residual, then pre-norm attention and FFN with layer-scales ``gamma_1``/``gamma_2``."""

    def __init__(self, dim: int, num_heads: int, linear: bool, mlp_ratio: float, drop_path: float = 0.,
                 layer_scale_init_value: float | None = 1.0, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.pos = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **dd)
        self.norm1 = LayerNorm2d(dim, eps=_LN_EPS, **dd)
        self.attn = RALAttention(dim, num_heads, linear, **dd)
        self.norm2 = LayerNorm2d(dim, eps=_LN_EPS, **dd)
        self.ffn = FFN(dim, int(mlp_ratio * dim), **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        if layer_scale_init_value is None:
            self.gamma_1 = self.gamma_2 = None
        else:
            self.gamma_1 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init_value), **dd))
            self.gamma_2 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init_value), **dd))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.pos(x)
        a = self.attn(self.norm1(x), rope)
        x = x + self.drop_path(a if self.gamma_1 is None else self.gamma_1 * a)
        f = self.ffn(self.norm2(x))
        return x + self.drop_path(f if self.gamma_2 is None else self.gamma_2 * f)


class Downsample(nn.Module):
    """3x3 stride-2 conv and BatchNorm (the official ``PatchMerging``)."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, 2, 1, device=device, dtype=dtype)
        self.norm = nn.BatchNorm2d(out_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x))


class RAVLTStage(nn.Module):
    """Optional downsample, then ``depth`` blocks sharing the stage's 2-D RoPE (persistent ``rope_angle``)."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, linear: bool, downsample: bool,
                 drop_path: Sequence[float], mlp_ratio: float, layer_scale_init_value: float | None,
                 device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.grad_checkpointing = False
        self.downsample = Downsample(dim, out_dim, **dd) if downsample else nn.Identity()
        head_dim = out_dim // num_heads
        angle = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 4, device=device, dtype=torch.float32))
        self.register_buffer('rope_angle', angle.repeat_interleave(2).to(dtype or torch.float32))
        self.blocks = nn.ModuleList([
            RAVLTBlock(out_dim, num_heads, linear, mlp_ratio, drop_path[i], layer_scale_init_value, **dd)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        rope = ops.rope_2d(self.rope_angle.float(), x.shape[2], x.shape[3])
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, rope, use_reentrant=False)
            else:
                x = blk(x, rope)
        return x


class Stem(nn.Module):
    """3x3 s2 -> BN -> GELU -> 3x3 -> BN -> GELU -> 3x3 -> BN -> GELU -> 3x3 s2 -> BN (``proj.{0..10}``)."""

    def __init__(self, in_chans: int, embed_dim: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        half = embed_dim // 2
        layers: list[nn.Module] = []
        for cin, cout, stride in ((in_chans, half, 2), (half, half, 1), (half, half, 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, **dd), nn.BatchNorm2d(cout, **dd), nn.GELU()]
        layers += [nn.Conv2d(half, embed_dim, 3, 2, 1, **dd), nn.BatchNorm2d(embed_dim, **dd)]
        self.in_chans = in_chans
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans)
        return self.proj(x)


def _flat_head(weight: torch.Tensor, target: torch.Tensor, owner: nn.Module) -> torch.Tensor:
    """The official classifier, a 1x1 conv on the pooled features, as the Linear's weight."""
    return weight.flatten(1) if weight.ndim == 4 else weight


class RAVLT(HierarchicalModel):
    """RAVLT.

    Args:
        embed_dims: width per stage.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        linear_stages: per stage, RALA (True) or softmax attention (the official flags 'l' / 'v').
        mlp_ratio: FFN hidden width / block width.
        projection: width of the 1x1 conv before pooling.
        layer_scale_init_values: per stage, the layer-scale init (``None``: no layer-scale).
        drop_path_rate: stochastic depth, linear from 0 over all blocks.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool``, ``drop_rate`` (classifier dropout),
            ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).
    """

    group_tail = ((r'^stages\.(\d+)\.rope_angle', (0,)), (r'^(?:proj|norm)\.', (99999,)))
    checkpoint_layout = Layout(
        name='RAVLT', marker=r'\.attn\.qkvo\.weight$', summary=stage_summary('pos.weight'),
        resize={r'^head\.fc\.weight$': _flat_head},
        renames=(('layers.{i}.downsample.', 'stages.{i+1}.downsample.'),
                 ('layers.{i}.RoPE.angle', 'stages.{i}.rope_angle'), ('layers.', 'stages.'),
                 ('.norm{n}.norm.', '.norm{n}.'), *HEAD_FC))

    def __init__(
            self,
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (1, 2, 4, 8),
            linear_stages: Sequence[bool] = (True, True, False, False),
            mlp_ratio: float = 3.5,
            projection: int = 1024,
            layer_scale_init_values: Sequence[float | None] = (1., 1., 1., 1.),
            drop_path_rate: float = 0.1,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, embed_dims=embed_dims, num_heads=num_heads, linear_stages=linear_stages,
                        layer_scale_init_values=layer_scale_init_values)
        self.patch_embed = Stem(self.in_chans, embed_dims[0], **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self._set_stages([RAVLTStage(
            embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], num_heads[i], bool(linear_stages[i]),
            downsample=i > 0, drop_path=dpr[i], mlp_ratio=mlp_ratio,
            layer_scale_init_value=layer_scale_init_values[i], **dd) for i in range(n)], embed_dims)
        self.proj = nn.Conv2d(embed_dims[-1], projection, 1, **dd)
        self._set_head(projection, nn.BatchNorm2d(projection, **dd))
        self.act = nn.SiLU()
        self.apply(partial(trunc_normal_init, types=(nn.Conv2d, nn.Linear)))  # the official init

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """The head's 1x1 conv -> BN -> Swish on the last stage's output (``forward_features``)."""
        return self.act(self.norm(self.proj(x)))

    def _final_on_intermediate(self, x: torch.Tensor) -> torch.Tensor:
        return x  # no norm is sized for the stage outputs: forward_intermediates(norm=True) changes nothing

    def _prune_final(self) -> bool:
        self.proj, self.norm, self.act = nn.Identity(), nn.Identity(), nn.Identity()
        return True


# ---------------------------------------------------------------------------------------------------------------
# Variants

_URL = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/'

# RALA.py's RAVLT_T/S/B/L; drop_path_rate is the official training value. The released files hold one state dict
# (the official main.py saves `model`; no EMA is trained).
register(Family(
    'ravlt', __name__, RAVLT, ema=False,
    cfg=dict(first_conv='patch_embed.proj.0', license='unknown', origin_url='https://github.com/qhfan/RALA',
             paper_ids='arXiv:2411.07635', paper_name='Breaking the Low-Rank Dilemma of Linear Attention'),
    variants=dict(
        ravlt_tiny=Variant('RAVLT-T: 15M params, 2.4 GFLOPs at 224.',
                           dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
                                layer_scale_init_values=(1., 1., 1., 1.), drop_path_rate=0.1),
                           {'in1k': dict(url=_URL + 'RAVLT_T.pth')}),
        ravlt_small=Variant('RAVLT-S: 26M params, 4.6 GFLOPs at 224.',
                            dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8),
                                 layer_scale_init_values=(1., 1., 1., 1.), drop_path_rate=0.15),
                            {'in1k': dict(url=_URL + 'RAVLT_S.pth')}),
        ravlt_base=Variant('RAVLT-B: 48M params, 9.9 GFLOPs at 224.',
                           dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8),
                                layer_scale_init_values=(1., 1., 1e-6, 1e-6), drop_path_rate=0.4),
                           {'in1k': dict(url=_URL + 'RAVLT_B.pth')}),
        ravlt_large=Variant('RAVLT-L: 95M params, 16.0 GFLOPs at 224.',
                            dict(embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10),
                                 layer_scale_init_values=(1e-6,) * 4, drop_path_rate=0.55),
                            {'in1k': dict(url=_URL + 'RAVLT_L.pth')}),
    )))
