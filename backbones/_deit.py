"""The DeiT skeleton shared by Agent-DeiT and InLine-DeiT: timm's ViT/DeiT blocks with a choice of attention per block.

DeiT (Touvron et al., ICML 2021; https://github.com/facebookresearch/deit) as timm's ``VisionTransformer`` builds it
and the Agent-Attention (``agent_transformer/models/agent_deit.py``) and InLine (``models/inline_deit.py``) code
modify it: a 16x16 patch embedding, a class token and learned absolute position embeddings, pre-norm blocks
(LayerNorm eps 1e-6, ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``), a final LayerNorm and the class token's
classifier. Parameter names are timm's (= the official ones), so official checkpoints load as saved.

Each block's attention is a kind (``attn_kinds``: one stage of ``depth`` blocks, :mod:`backbones._attn_kinds`):
``'softmax'`` (timm's ``Attention`` parameters, :func:`ops.dense_attention` underneath), ``'agent'``
(:class:`AgentDeiTAttention`), ``'inline'`` (:class:`InLineDeiTAttention`). Every attention takes the tokens
``[B, 1 + H*W, C]`` (class token first) and the patch grid ``(H, W)``, so the linear attentions, which reshape the
patch tokens into a map, run on any grid (the official code derives a square grid from the token count).

Any input size: the position embeddings are resampled to the actual patch grid on the fly (timm's
:func:`~timm.layers.resample_abs_pos_embed`, as timm's ``dynamic_img_size``); at the build size they are used as
stored. A side that is not a multiple of the patch size is zero-padded at the end to the next multiple (timm's
``dynamic_img_pad``; ``dynamic_img_pad=False`` gives timm's divisibility error instead).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.layers import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbed,
    register_notrace_function,
    resample_abs_pos_embed,
    trunc_normal_,
)
from timm.layers.helpers import get_device_dtype
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

import ops

from ._agent_inline import (
    AGENT_BIAS_RESIZE,
    AgentAttention,
    InLineAttention,
    inline_residual,
    pool_agents,
    resize_agent_bias,
)
from ._attn_kinds import check_attn_kinds, kind_kwargs
from ._hierarchical import check_image
from .checkpoint import Layout, PretrainedMixin

__all__ = ['ATTENTIONS', 'AgentDeiTAttention', 'DeiT', 'DeiTBlock', 'InLineDeiTAttention', 'SoftmaxAttention']

_LN_EPS = 1e-6
_POOLS = ('token', 'avg', '')


class SoftmaxAttention(Attention):
    """timm's ViT attention (``qkv``, ``proj``) on :func:`ops.dense_attention`, with the DeiT attention signature
    ``(x, grid)`` (``grid``: the patch grid, where the tokens after the class token lie).

    ``grid_size`` (the build grid, which sizes the linear attentions' parameters) is not used.
    """

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., device=None, dtype=None):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                         device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        out = ops.dense_attention(self.q_norm(q), self.k_norm(k), v, scale=self.scale, token_grid=ops.TokenGrid(
            grid, prefix=1), dropout_p=self.attn_drop.p if self.training else 0.)
        return self.proj_drop(self.proj(self.norm(out.reshape(b, n, -1))))


class AgentDeiTAttention(AgentAttention):
    """Agent-DeiT's attention: the shared agent attention over the patch grid, plus the class token.

    Agents pool the patch queries only; the class token is one more key of the agents (its logit bias ``ac_bias``
    ``[1, heads, A, 1]``) and one more query of the agents (``ca_bias`` ``[1, heads, 1, A]``), prepended to the
    shared biases (:class:`~backbones._agent_inline.AgentBiases`, sized to the build grid); the depthwise conv of v
    (``dwc``) is added to the patch tokens only. With another agent grid (``agent_shape``) the cls biases' agent
    axis is resized bilinearly like the others.
    """

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., agent_num: int = 49,
                 agent_shape: Sequence[int] | None = None, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__(dim, num_heads, agent_num, grid_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop, agent_shape=agent_shape, **dd)
        self.ac_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, **dd))
        self.ca_bias = nn.Parameter(torch.zeros(1, num_heads, 1, agent_num, **dd))
        if self.ac_bias.device.type != 'meta':
            trunc_normal_(self.ac_bias, std=.02)
            trunc_normal_(self.ca_bias, std=.02)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        agent_shape = self.agent_shape or self.grid
        agents = pool_agents(q[:, 1:].reshape(b, *grid, self.num_heads, self.head_dim), agent_shape)
        bias1, bias2 = self.biases(grid, agent_shape=agent_shape)
        cls_key = resize_agent_bias(self.ac_bias[0][..., None], (1, 1), self.grid, agent_shape)  # [heads, A', 1]
        cls_query = resize_agent_bias(self.ca_bias[0].transpose(1, 2)[..., None], (1, 1), self.grid, agent_shape)
        bias1 = torch.cat([cls_key, bias1], dim=-1)
        bias2 = torch.cat([cls_query.transpose(1, 2), bias2], dim=-2)
        out = ops.agent_attention(q, k, v, agents, bias1, bias2, scale=self.scale,
                                  dropout_p=self.attn_drop if self.training else 0.,
                                  token_grid=ops.TokenGrid(grid, prefix=1)).reshape(b, n, c)
        local = self.dwc(v[:, 1:].reshape(b, *grid, c).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        out = torch.cat([out[:, :1], out[:, 1:] + local], dim=1)
        return self.proj_drop(self.proj(out))


class InLineDeiTAttention(InLineAttention):
    """InLine-DeiT's attention: the shared InLine attention over all tokens (class token included), its dynamic
    depthwise residual (kernels from the mean of all input tokens) on the patch tokens only.

    ``attn_drop`` is unused (no attention matrix), as in the official module.
    """

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., kernel_func: str = 'identity', device=None,
                 dtype=None):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, kernel_func=kernel_func, proj_drop=proj_drop,
                         device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        out = ops.linear_attention(q, k, v, feature_map=self.kernel_func, normalizer='inline', scale=self.scale,
                                   token_grid=ops.TokenGrid(grid, prefix=1)).reshape(b, n, c)
        local = inline_residual(self.residual, x.mean(dim=1), v[:, 1:].reshape(b, *grid, c).permute(0, 3, 1, 2))
        out = torch.cat([out[:, :1], out[:, 1:] + local.flatten(2).transpose(1, 2)], dim=1)
        return self.proj_drop(self.proj(out))


AttentionFactory = Callable[..., nn.Module]
ATTENTIONS: dict[str, AttentionFactory] = dict(softmax=SoftmaxAttention, agent=AgentDeiTAttention,
                                               inline=InLineDeiTAttention)  # DeiT.KINDS, DeiT's own first


class DeiTBlock(nn.Module):
    """timm's ViT ``Block`` (no layer-scale), passing the patch grid to its attention."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4., proj_drop: float = 0.,
                 drop_path: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), grid))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


@register_notrace_function  # torch.fx: a leaf (the grid and the resize depend on the input size)
def embed_tokens(x: torch.Tensor, cls_token: torch.Tensor, pos: torch.Tensor, build_grid: tuple[int, int]
                 ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patches ``[B, H, W, C]`` -> class token + patch tokens with position embeddings (resampled from the build
    grid to the patch grid), and the patch grid. Public: torch.fx autowraps no ``_``-prefixed function."""
    grid = (x.shape[1], x.shape[2])  # no int(): symbolic when exported
    if torch.compiler.is_compiling() or grid != tuple(build_grid):  # compiled: no guard on the build size
        pos = resample_abs_pos_embed(pos, grid, build_grid, num_prefix_tokens=1)
    return torch.cat([cls_token.expand(x.shape[0], -1, -1), x.flatten(1, 2)], dim=1) + pos, grid


def _resize_pos_embed(pos: torch.Tensor, target: torch.Tensor, owner: nn.Module) -> torch.Tensor:
    """Position embeddings of another grid, resampled to the model's (timm's ``resample_abs_pos_embed``)."""
    if pos.ndim != 3 or pos.shape[-1] != target.shape[-1]:
        return pos
    return resample_abs_pos_embed(pos, tuple(owner.patch_embed.grid_size), num_prefix_tokens=1)


def _summary(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    blocks = {int(k.split('.')[1]) for k in state_dict if k.startswith('blocks.')}
    return dict(depth=len(blocks), width=state_dict['cls_token'].shape[-1] if 'cls_token' in state_dict else None)


class DeiT(PretrainedMixin, nn.Module):
    """DeiT with a choice of attention per block.

    Args:
        img_size: the build resolution: sizes the position embeddings and the linear attentions' resolution-dependent
            parameters (``grid_size`` = img_size // patch_size); any input size runs.
        attn_kinds: the kind of each block, as one stage (``[['agent'] * 4 + ['softmax'] * 8]`` for Agent-DeiT-B);
            ``None``: ``'softmax'`` everywhere (DeiT).
        attentions: kind -> attention class over :data:`ATTENTIONS` (``'softmax'`` :class:`SoftmaxAttention`,
            ``'agent'`` :class:`AgentDeiTAttention`, ``'inline'`` :class:`InLineDeiTAttention`).
        attn_kwargs: per kind, extra keyword arguments for its class, each a value or a per-block tuple.
        patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the ViT geometry.
        global_pool: ``'token'`` (the class token, DeiT's), ``'avg'`` (the patch tokens' mean) or ``''``.
        dynamic_img_pad: zero-pad the input at the end to a multiple of the patch size (timm's option).
        drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate: dropout after the position embedding / in the
            MLP and projections / on the attention weights; stochastic depth (linear over the blocks).
        head_drop_rate: dropout before the classifier.
        device, dtype: where and in which dtype to create the parameters (timm's factory kwargs).
    """

    KINDS = tuple(ATTENTIONS)
    output_fmt = 'NLC'
    # The official layout is timm's (ours); position embeddings and agent biases of another grid are resized.
    checkpoint_layout = Layout(name='DeiT', marker=r'^cls_token$', summary=_summary, classifier=('head',),
                               resize={**AGENT_BIAS_RESIZE, r'^pos_embed$': _resize_pos_embed})

    def __init__(
            self,
            img_size: int = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dim: int = 192,
            depth: int = 12,
            num_heads: int = 3,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            attn_kinds: Sequence[Sequence[str]] | None = None,
            attentions: Mapping[str, AttentionFactory] | None = None,
            attn_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
            dynamic_img_pad: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            head_drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if global_pool not in _POOLS:
            raise ValueError(f'global_pool must be one of {_POOLS}, got {global_pool!r}')
        attentions = {**ATTENTIONS, **(attentions or {})}
        self.attn_kinds = check_attn_kinds(attn_kinds, (depth,), tuple(attentions))
        self.num_classes, self.global_pool, self.in_chans = num_classes, global_pool, in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.patch_size = patch_size
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, flatten=False, output_fmt='NHWC',
                                      strict_img_size=False, dynamic_img_pad=dynamic_img_pad, **dd)
        grid_size = tuple(self.patch_embed.grid_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_size[0] * grid_size[1] + 1, embed_dim, **dd))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        blocks = []
        for i, kind in enumerate(self.attn_kinds[0]):
            attn = attentions[kind](embed_dim, num_heads, grid_size, qkv_bias=qkv_bias, attn_drop=attn_drop_rate,
                                    proj_drop=proj_drop_rate, **kind_kwargs(attn_kwargs, kind, i), **dd)
            blocks.append(DeiTBlock(embed_dim, attn, mlp_ratio, proj_drop_rate, dpr[i], **dd))
        self.blocks = nn.Sequential(*blocks)
        self.feature_info = [dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size)
                             for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, eps=_LN_EPS, **dd)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        if self.pos_embed.device.type != 'meta':  # nothing to draw on meta (and timm's trunc_normal_ is slow there)
            self._init_weights()

    def _init_weights(self) -> None:
        # the official (timm ViT, mode '') init: truncated-normal tokens and Linear weights (the classifier's too),
        # zero biases, unit LayerNorms; the patch conv keeps torch's init
        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def feature_cfg(cls, args: dict[str, Any]) -> dict[str, Any]:
        """timm's ``feature_cfg``: the last 3 blocks by default, through timm's getter (as its ViT)."""
        return dict(out_indices=args.pop('out_indices', 3), feature_cls='getter')

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {'pos_embed', 'cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r'^cls_token|pos_embed|patch_embed', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ValueError(f'global_pool must be one of {_POOLS}, got {global_pool!r}')
            self.global_pool = global_pool
        self.num_classes = num_classes
        # the new classifier goes where the model's parameters are, in the model's mode
        self.head = (nn.Linear(self.embed_dim, num_classes, **get_device_dtype(self)) if num_classes > 0
                     else nn.Identity()).train(self.training)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> class token + patch tokens with position embeddings, and the patch grid."""
        check_image(x, self.in_chans, self.patch_size, 'one patch')
        x, grid = embed_tokens(self.patch_embed(x), self.cls_token, self.pos_embed, self.patch_embed.grid_size)
        return self.pos_drop(x), grid

    def _block(self, blk: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(blk, x, grid, use_reentrant=False)
        return blk(x, grid)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self._tokens(x)
        for blk in self.blocks:
            x = self._block(blk, x, grid)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == 'token':
            x = x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs for ``indices`` (last n if int, all if None) as timm's ViT gives them, and the features.

        ``output_fmt`` ``'NCHW'`` (patch tokens as a map) or ``'NLC'``; ``norm`` applies the final norm to each;
        ``return_prefix_tokens`` pairs each with its class token ``[B, 1, C]``.
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, grid = self._tokens(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[:max_index + 1]
        intermediates = []
        for i, blk in enumerate(blocks):
            x = self._block(blk, x, grid)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        prefix = [y[:, :self.num_prefix_tokens] for y in intermediates]
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == 'NCHW':
            intermediates = [y.reshape(y.shape[0], *grid, -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks (and norm / head) that the given intermediates do not need; returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices
