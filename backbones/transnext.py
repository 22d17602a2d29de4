"""TransNeXt: hierarchical backbones of aggregated attention (pixel-focused local window + pooled tokens) with
convolutional GLU MLPs.

Paper: `TransNeXt: Robust Foveal Visual Perception for Vision Transformers` (CVPR 2024) -
https://arxiv.org/abs/2311.17132. Official code and weights (Apache-2.0): https://github.com/DaiShiResearch/TransNeXt

* Aggregated attention (stages 1-3; all four in ``*_aaaa``), per query in ONE softmax over
  - its 3x3 (``window_size``) neighbourhood, centred and zero-padded with the border slots masked (a border query
    sees fewer keys): :func:`ops.na2d` with ``border='mask'``; keys L2-normalised; ``relative_pos_bias_local`` (one
    bias per window slot and head) as the op's relative position bias;
  - pooled tokens (1x1 conv ``sr`` -> GELU -> adaptive average pool to ``H // sr x W // sr`` -> LayerNorm -> the
    same ``kv``), keys L2-normalised, with the continuous position bias of an MLP (``cpb_fc1/2``) on log-spaced
    relative coordinates: :func:`ops.dense_attention` with that bias, merged with the local part exactly through
    the log-sum-exp (:func:`ops.merge_attentions`);
  - queries L2-normalised plus ``query_embedding``, times ``softplus(temperature)`` and the length scale
    ``log(valid local keys + pooled tokens)`` (smaller at borders), folded into the queries (scale 1);
  then the local part gets ``q_norm @ learnable_tokens + learnable_bias`` added to its softmax weights before they
  weigh the local values: by linearity that term is its own neighbourhood weighted sum, :func:`ops.na_av` (no
  unfolded copies of V), added to the merged attention. Equal to the official module up to rounding.
* Stage 4: full attention with the same length-scaled cosine logits and an MLP position bias over all tokens.
* Every resolution-dependent table (pool size, relative coordinates and their index, length scales) is derived
  from the input at run time and cached per size (the official module fixes them at build time, so it fails at
  any other size); ``pretrain_size`` only normalises the relative coordinates (224 for the ImageNet-1K models and
  their 384 fine-tunes, 256 for ``transnext_micro_aaaa_256``). The official detection code interpolates a
  bias computed at ``img_size`` instead (TransNeXt issue #11); ours is the exact bias at every size. Maps smaller
  than ``sr`` pool to one token (the official code would build an empty pool). Under ``torch.compile`` the tables
  come from one op (``attnzoo::transnext_stage_tables``, :mod:`ops.dense.cpb`: their row count is
  ``torch.unique``'s, data-dependent), so ``fullgraph=True`` holds with static sizes (a graph per size) and with
  ``dynamic=True`` (one graph for all sizes, checked with aot_eager; inductor's CPU codegen fails on a symbolic
  stride order elsewhere in the model, as it did before this op).
* Attention dropout is not offered (every official configuration has ``attn_drop_rate=0``).

Layout differences from the official module (``TransNeXt.checkpoint_layout`` maps official checkpoints onto ours):
``patch_embed1`` -> ``patch_embed``, ``patch_embed{i}`` -> ``stages.{i-1}.downsample``, ``block{i}.{j}`` ->
``stages.{i-1}.blocks.{j}``, ``norm{i}`` -> ``stages.{i-1}.norm`` (every stage ends with its norm, as the official
backbone's outputs), ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``, ``head`` -> ``head.fc``. The official state dict has
no persistent buffers (all its tables are ``persistent=False``), so nothing else is dropped or rebuilt.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, register_notrace_module
from torch.utils.checkpoint import checkpoint

import ops
from ops import StageTables, transnext_stage_tables

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, check_image, stage_count
from .checkpoint import HEAD_FC, Layout, stage_summary

__all__ = ['TransNeXt', 'AggregatedAttention', 'Attention', 'ConvGLU']

_LN_EPS = 1e-6  # the official norm_layer (blocks and stage norms); patch embeddings and the pool norm use 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Layers


def _scaled_queries(q: torch.Tensor, query_embedding: torch.Tensor, temperature: torch.Tensor,
                    scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q_norm, (q_norm + query_embedding) * softplus(temperature) * length scale)`` for ``q [B, N, heads, d]``
    (the official order of operations)."""
    q_norm = F.normalize(q, dim=-1)
    scaled = (q_norm + query_embedding.transpose(0, 1)) * F.softplus(temperature).transpose(0, 1)
    return q_norm, scaled * scale.to(q.dtype)[:, None, None]


class AggregatedAttention(nn.Module):
    """Aggregated attention on ``[B, N, C]`` tokens of an ``H x W`` map (see the module docstring).

    Parameters keep the official names and shapes. ``sr_ratio``: pooling factor of the pooled tokens;
    ``fixed_pool_size``: pool to this size instead of ``H // sr_ratio x W // sr_ratio``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 3, qkv_bias: bool = True, proj_drop: float = 0.,
                 sr_ratio: int = 1, fixed_pool_size: int | None = None, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        if window_size % 2 != 1:
            raise ValueError(f'window_size must be odd (a centred window), got {window_size}')
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.window_size, self.sr_ratio, self.fixed_pool_size = window_size, sr_ratio, fixed_pool_size
        local_len = window_size ** 2
        self.temperature = nn.Parameter(torch.log((torch.ones(num_heads, 1, 1, **dd) / 0.24).exp() - 1))
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.query_embedding = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, 1, self.head_dim, **dd), std=0.02))
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr = nn.Conv2d(dim, dim, 1, **dd)
        self.norm = nn.LayerNorm(dim, **dd)
        self.act = nn.GELU()
        self.cpb_fc1 = nn.Linear(2, 512, **dd)
        self.cpb_fc2 = nn.Linear(512, num_heads, **dd)
        self.relative_pos_bias_local = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, local_len, **dd), std=0.0004))
        self.learnable_tokens = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, self.head_dim, local_len, **dd), std=0.02))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, local_len, **dd))

    def pool_size(self, H: int, W: int) -> tuple[int, int]:
        if self.fixed_pool_size is not None:
            return self.fixed_pool_size, self.fixed_pool_size
        return max(H // self.sr_ratio, 1), max(W // self.sr_ratio, 1)

    def forward(self, x: torch.Tensor, H: int, W: int, tables: StageTables) -> torch.Tensor:
        B, N, C = x.shape
        h, d, ws = self.num_heads, self.head_dim, self.window_size
        q_norm, q = _scaled_queries(self.q(x).view(B, N, h, d), self.query_embedding, self.temperature, tables.scale)
        k, v = self.kv(x).view(B, N, 2, h, d).unbind(2)
        k = F.normalize(k, dim=-1)
        # local window: one bias per slot, placed where slot offset o reads the op's table (o + ws - 1)
        rpb = F.pad(self.relative_pos_bias_local.view(h, ws, ws), (ws // 2,) * 4)
        grid = (B, H, W, h, d)
        out_local, lse_local = ops.na2d(q.reshape(grid), k.reshape(grid), v.reshape(grid), ws, scale=1., rpb=rpb,
                                        border='mask', return_lse=True)
        # pooled tokens
        pooled = self.pool(x, H, W)
        kp, vp = self.kv(pooled).view(B, pooled.shape[1], 2, h, d).unbind(2)
        out_pool, lse_pool = ops.dense_attention(q, F.normalize(kp, dim=-1), vp, bias=tables.bias(
            self.cpb_fc1, self.cpb_fc2), scale=1., return_lse=True,
            token_grid=((H, W), ops.TokenGrid(self.pool_size(H, W), name='pooled')))
        out, _ = ops.merge_attentions([out_local.reshape(B, N, h, d), out_pool],
                                      [lse_local.reshape(B, N, h), lse_pool])
        # the learnable local weights, added to the softmax weights of the local values
        weights = torch.einsum('bnhd,hdk->bnhk', q_norm, self.learnable_tokens) + self.learnable_bias.transpose(0, 1)
        out = out + ops.na_av(weights.reshape(B, H, W, h, ws * ws), v.reshape(grid), ws, border='mask').reshape(
            B, N, h, d)
        return self.proj_drop(self.proj(out.reshape(B, N, C)))

    def pool(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Pooled tokens ``[B, P, C]``: 1x1 conv -> GELU -> adaptive average pool -> LayerNorm."""
        B, N, C = x.shape
        x_ = self.act(self.sr(x.transpose(1, 2).reshape(B, C, H, W)))
        return self.norm(F.adaptive_avg_pool2d(x_, self.pool_size(H, W)).flatten(2).transpose(1, 2))


class Attention(nn.Module):
    """Full attention with length-scaled cosine logits, query embedding and the CPB MLP bias (TransNeXt stage 4)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0., device=None,
                 dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.temperature = nn.Parameter(torch.log((torch.ones(num_heads, 1, 1, **dd) / 0.24).exp() - 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.query_embedding = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, 1, self.head_dim, **dd), std=0.02))
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.cpb_fc1 = nn.Linear(2, 512, **dd)
        self.cpb_fc2 = nn.Linear(512, num_heads, **dd)

    def pool_size(self, H: int, W: int) -> tuple[int, int]:
        return H, W  # every token is a key

    def forward(self, x: torch.Tensor, H: int, W: int, tables: StageTables) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).unbind(2)
        _, q = _scaled_queries(q, self.query_embedding, self.temperature, tables.scale)
        out = ops.dense_attention(q, F.normalize(k, dim=-1), v, bias=tables.bias(self.cpb_fc1, self.cpb_fc2),
                                  scale=1., token_grid=(H, W))
        return self.proj_drop(self.proj(out.reshape(B, N, C)))


class ConvGLU(nn.Module):
    """Convolutional GLU: ``fc2(GELU(dwconv3x3(a)) * b)`` with ``a, b = fc1(x)``, hidden ``int(2 * hidden / 3)``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        hidden = int(2 * hidden / 3)
        self.fc1 = nn.Linear(dim, hidden * 2, **dd)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, **dd)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        B, N, C = a.shape
        a = self.dwconv(a.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)
        x = self.drop(self.act(a) * b)
        return self.drop(self.fc2(x))


class Block(nn.Module):
    """Pre-norm block on ``[B, N, C]`` tokens: attention, then ConvGLU."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, window_size: int | None,
                 qkv_bias: bool = True, drop: float = 0., drop_path: float = 0., fixed_pool_size: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        if window_size is None:
            self.attn = Attention(dim, num_heads, qkv_bias, drop, **dd)
        else:
            self.attn = AggregatedAttention(dim, num_heads, window_size, qkv_bias, drop, sr_ratio, fixed_pool_size,
                                            **dd)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = ConvGLU(dim, int(dim * mlp_ratio), drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, H: int, W: int, tables: StageTables) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W, tables))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class PatchEmbed(nn.Module):
    """Overlapping patch embedding (conv, then LayerNorm over channels); NCHW in and out."""

    def __init__(self, in_chans: int, dim: int, kernel_size: int, stride: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.proj = nn.Conv2d(in_chans, dim, kernel_size, stride, kernel_size // 2, **dd)
        self.norm = nn.LayerNorm(dim, **dd)  # eps 1e-5, as the official patch embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@register_notrace_module  # torch.fx: a leaf (pool size and tables from the map size)
class TransNeXtStage(nn.Module):
    """Optional downsample, ``depth`` blocks on tokens, the stage norm; NCHW in and out.

    ``pretrain_size``: this stage's map size at the pretraining resolution (normalises the relative coordinates).
    """

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 window_size: int | None, pretrain_size: int, drop_path: Sequence[float], downsample: bool,
                 qkv_bias: bool = True, drop: float = 0., fixed_pool_size: int | None = None, device=None,
                 dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.grad_checkpointing = False
        self.window_size, self.pretrain_size = window_size, pretrain_size
        self.downsample = PatchEmbed(in_dim, dim, 3, 2, **dd) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, sr_ratio, window_size, qkv_bias, drop, drop_path[i], fixed_pool_size,
                  **dd) for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS, **dd)

    def tables(self, H: int, W: int, device: torch.device) -> StageTables:
        pool = self.blocks[0].attn.pool_size(H, W) if len(self.blocks) else (H, W)
        return transnext_stage_tables((H, W), pool, (self.pretrain_size,) * 2, self.window_size, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        B, C, H, W = x.shape
        tables = self.tables(H, W, x.device)
        x = x.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, H, W, tables, use_reentrant=False)
            else:
                x = blk(x, H, W, tables)
        return self.norm(x).transpose(1, 2).reshape(B, C, H, W)


# ---------------------------------------------------------------------------------------------------------------
# Model


class TransNeXt(HierarchicalModel):
    """TransNeXt.

    Args:
        depths, embed_dims, num_heads, mlp_ratios, sr_ratios: per stage.
        window_size: per stage, the aggregated-attention window (None: full attention).
        pretrain_size: the pretraining image size (normalises the relative coordinates of the position bias).
        fixed_pool_size: pool the aggregated attention's tokens to this size instead of ``H / sr``.
        qkv_bias: biases of the q / kv / qkv projections.
        drop_path_rate: stochastic depth, linear from 0.
        **kwargs: the shared ``in_chans``, ``num_classes``, ``global_pool`` ('avg' or ''), ``drop_rate`` (here also
            the projection / MLP dropout), ``device``, ``dtype`` (:class:`~backbones._hierarchical.HierarchicalModel`).

    Every stage ends with its LayerNorm (the official backbone's per-level outputs), so the final norm is inside
    the last stage and ``forward_intermediates(norm=...)`` has nothing more to apply.
    """

    # The official state dict holds no buffers (its tables are not persistent); should a file hold them anyway,
    # they are dropped: ours are derived from the input size.
    group_tail = ((r'^stages\.(\d+)\.norm', (99999,)),)  # each stage's norm after that stage's blocks
    checkpoint_layout = Layout(
        name='TransNeXt', marker=r'\.attn\.temperature$', summary=stage_summary('norm1.weight'),
        derived=(r'relative_pos_index\d*', r'relative_coords_table\d*', 'seq_length_scale', 'padding_mask'),
        renames=(('patch_embed1.', 'patch_embed.'), ('patch_embed{i+1}.', 'stages.{i}.downsample.'),
                 ('block{i+1}.{b}.', 'stages.{i}.blocks.{b}.'), ('.mlp.dwconv.dwconv.', '.mlp.dwconv.'),
                 ('norm{i+1}.', 'stages.{i}.norm.'), *HEAD_FC))

    def __init__(
            self,
            depths: Sequence[int] = (2, 2, 15, 2),
            embed_dims: Sequence[int] = (48, 96, 192, 384),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            sr_ratios: Sequence[int] = (8, 4, 2, 1),
            window_size: Sequence[int | None] = (3, 3, 3, None),
            pretrain_size: int = 224,
            fixed_pool_size: int | None = None,
            qkv_bias: bool = True,
            drop_path_rate: float = 0.,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, embed_dims=embed_dims, num_heads=num_heads, mlp_ratios=mlp_ratios, sr_ratios=sr_ratios,
                        window_size=window_size)
        if self.global_pool not in ('avg', ''):
            raise ValueError(f"TransNeXt pools with 'avg' (or '' for none), got global_pool={self.global_pool!r}")
        self.pretrain_size = pretrain_size
        self.patch_embed = PatchEmbed(self.in_chans, embed_dims[0], 7, 4, **dd)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self._set_stages([TransNeXtStage(
            embed_dims[i - 1] if i else embed_dims[0], embed_dims[i], depths[i], num_heads[i], mlp_ratios[i],
            sr_ratios[i], window_size[i], pretrain_size // 2 ** (i + 2), dpr[sum(depths[:i]):sum(depths[:i + 1])],
            downsample=i > 0, qkv_bias=qkv_bias, drop=self.drop_rate,
            fixed_pool_size=None if sr_ratios[i] == 1 else fixed_pool_size, **dd) for i in range(n)], embed_dims)
        self._set_head(embed_dims[-1], nn.Identity())  # the last stage's norm is the final norm
        for m in self.modules():
            self._init_weights(m)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """The official init: truncated-normal linear weights, fan-out normal convs, unit norms."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The official ``no_weight_decay_keywords`` (query embeddings, local biases, CPB MLPs, temperatures)."""
        return {'*query_embedding', '*relative_pos_bias_local', '*cpb_fc*', '*temperature'}

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans)
        return self.patch_embed(x)


# ---------------------------------------------------------------------------------------------------------------
# Variants

_MICRO = dict(depths=(2, 2, 15, 2), embed_dims=(48, 96, 192, 384), num_heads=(2, 4, 8, 16))
_TINY = dict(depths=(2, 2, 15, 2), embed_dims=(72, 144, 288, 576), num_heads=(3, 6, 12, 24))
_SMALL = dict(depths=(5, 5, 22, 5), embed_dims=(72, 144, 288, 576), num_heads=(3, 6, 12, 24))
_BASE = dict(depths=(5, 5, 23, 5), embed_dims=(96, 192, 384, 768), num_heads=(4, 8, 16, 32))
# the official evaluation: resize to size / 0.875 + centre crop below 384, a squashing resize from 384
_384 = dict(input_size=(3, 384, 384), crop_pct=1.0, crop_mode='squash')


def _hf(name: str, **cfg: Any) -> dict[str, dict[str, Any]]:
    """The release ``DaiShiResearch/<name>`` on the HF hub (``<name with _>.pth``)."""
    return {'in1k': dict(cfg, url=f'https://huggingface.co/DaiShiResearch/{name}/resolve/main/'
                                  f'{name.replace("-", "_")}.pth')}


# The official entrypoints (classification/transnext.py); the 384 models are the 224 ones fine-tuned at 384 with
# pretrain_size 224 (configs/finetune); the A-A-A-A micro model is trained at 256 (its pretrain_size). The official
# releases hold one set of weights.
register(Family(
    'transnext', __name__, TransNeXt, ema=False,
    cfg=dict(first_conv='patch_embed.proj', crop_mode='center', license='apache-2.0',
             origin_url='https://github.com/DaiShiResearch/TransNeXt', paper_ids='arXiv:2311.17132',
             paper_name='TransNeXt: Robust Foveal Visual Perception for Vision Transformers'),
    variants=dict(
        transnext_micro=Variant('TransNeXt-Micro: 12.8M params, 2.7 GFLOPs at 224.', _MICRO,
                                _hf('transnext-micro-224-1k')),
        transnext_tiny=Variant('TransNeXt-Tiny: 28.3M params, 5.7 GFLOPs at 224.', _TINY,
                               _hf('transnext-tiny-224-1k')),
        transnext_small=Variant('TransNeXt-Small: 49.7M params, 10.3 GFLOPs at 224.', _SMALL,
                                _hf('transnext-small-224-1k')),
        transnext_base=Variant('TransNeXt-Base: 89.7M params, 18.4 GFLOPs at 224.', _BASE,
                               _hf('transnext-base-224-1k')),
        transnext_small_384=Variant(
            'TransNeXt-Small fine-tuned at 384 (pretrain_size 224): 49.7M params, 32.1 GFLOPs at 384.', _SMALL,
            _hf('transnext-small-384-1k-ft-1k', **_384)),
        transnext_base_384=Variant(
            'TransNeXt-Base fine-tuned at 384 (pretrain_size 224): 89.7M params, 56.3 GFLOPs at 384.', _BASE,
            _hf('transnext-base-384-1k-ft-1k', **_384)),
        transnext_micro_aaaa_256=Variant(
            'TransNeXt-Micro with aggregated attention in all four stages (sr 16/8/4/2), trained at 256: 13.1M '
            'params,\n    3.3 GFLOPs at 256.',
            dict(_MICRO, window_size=(3, 3, 3, 3), sr_ratios=(16, 8, 4, 2), pretrain_size=256),
            _hf('transnext-micro-AAAA-256-1k', input_size=(3, 256, 256))),
    )))
