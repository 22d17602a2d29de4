"""Agent attention and InLine attention as token mixers on an NHWC map, shared by every skeleton that uses them.

Agent Attention (Han et al., ECCV 2024, https://github.com/LeapLabTHU/Agent-Attention) and InLine attention
("Bridging the Divide", Han et al., NeurIPS 2024, https://github.com/LeapLabTHU/InLine) are each one attention
swapped into the Swin, PVT, DeiT and CSwin skeletons. The attention arithmetic is in :mod:`ops`
(:func:`ops.agent_attention`: two dense cross-attentions; :func:`ops.linear_attention` with ``normalizer='inline'``);
this module holds what the models add around it, with the official parameter names, so official state dicts
load unchanged:

* :class:`AgentBiases` — the six agent position biases and the rule that sizes them to any map
  (:func:`resize_agent_bias`), :func:`agent_grid`, :func:`pool_agents`;
* :class:`AgentAttention` — Swin's / PVT's agent attention (projections, agents, biases, DWC of v);
* :class:`InLineAttention` — Swin's / PVT's InLine attention (projections, the injective linear attention, the
  per-image dynamic 3x3 depthwise residual on v).

Bias sizing. ``an_bias`` / ``na_bias`` ``[heads, A, 7, 7]`` are bilinearly resized to the key / query grid (as the
official models do at every size); ``ah/aw_bias`` (agents x key rows / columns) and ``ha/wa_bias`` (query rows /
columns x agents) are sized to the build grid and, on another grid, resized bilinearly as the official
detection / segmentation backbones (``downstream/``) do; with another agent grid (their ``downstream_agent_shapes``)
the agent axis is resized too. At the build grid and agent count every resize is the identity (bilinear resizing to
the same size copies), so outputs equal the official classification models'.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module, trunc_normal_
from torch import nn

import ops

from .checkpoint import stage_depths, stage_summary

__all__ = ['AGENT_BIAS_RESIZE', 'AgentBiases', 'AgentAttention', 'InLineAttention', 'agent_grid', 'attention_summary',
           'inline_parts', 'inline_residual', 'pool_agents', 'resize_agent_bias', 'resize_bias_axes', 'INLINE_KERNELS']

INLINE_KERNELS = ('identity', 'relu', 'leakyrelu', 'exp')  # the official kernel_func choices


def agent_grid(agent_num: int) -> tuple[int, int]:
    """The square pooling grid of ``agent_num`` agents (the official ``pool_size = int(agent_num ** 0.5)``)."""
    side = math.isqrt(agent_num) if isinstance(agent_num, int) and agent_num > 0 else 0
    if side * side != agent_num:
        raise ValueError(f'agent_num must be a positive square number (agents pool the queries to a square grid), '
                         f'got {agent_num!r}')
    return side, side


def pool_agents(query: torch.Tensor, agent_shape: tuple[int, int]) -> torch.Tensor:
    """Agent tokens: the adaptive average pool of ``query [B, H, W, heads, D]`` to ``agent_shape``;
    returns ``[B, A, heads, D]`` (agents row-major over the grid)."""
    b, h, w, nh, d = query.shape
    pooled = ops.adaptive_avg_pool2d(query.reshape(b, h, w, nh * d).permute(0, 3, 1, 2), agent_shape)
    return pooled.flatten(2).transpose(1, 2).reshape(b, -1, nh, d)


def resize_agent_bias(bias: torch.Tensor, size: tuple[int, int], grid: tuple[int, int],
                      agent_shape: tuple[int, int]) -> torch.Tensor:
    """``bias [heads, A, h0, w0]`` (agent-major, A = ``grid`` flattened) -> ``[heads, A', H * W]``.

    The official downstream rule: bilinear resize of the spatial axes to ``size``, then of the agent axes from
    ``grid`` to ``agent_shape`` (A' agents); each step is skipped where the size is already right (identity)."""
    heads = bias.shape[0]
    if torch.compiler.is_compiling() or tuple(bias.shape[-2:]) != size:  # compiled: no guard on the map size
        bias = F.interpolate(bias, size=size, mode='bilinear')
    if agent_shape != grid:
        bias = bias.reshape(heads, *grid, -1).permute(0, 3, 1, 2)
        bias = F.interpolate(bias, size=agent_shape, mode='bilinear')
        return bias.flatten(2).transpose(1, 2)
    return bias.flatten(2)


def resize_bias_axes(bias: torch.Tensor, target: torch.Tensor, owner: nn.Module | None = None) -> torch.Tensor:
    """A checkpoint's agent bias of another build grid (``ah/aw_bias``, ``ha/wa_bias``: one spatial axis each)
    linearly resized to ``target``'s shape along the axes that differ: the official downstream rule of
    :func:`resize_agent_bias` (bilinear over the summed row and column biases, which is this per axis), applied once
    on load instead of at every call. Of another rank, it is left for the mismatch report."""
    if bias.ndim != target.ndim:
        return bias
    for axis, size in enumerate(target.shape):
        if bias.shape[axis] != size:
            moved = bias.movedim(axis, -1)
            flat = F.interpolate(moved.reshape(-1, 1, moved.shape[-1]).float(), size=size, mode='linear')
            bias = flat.reshape(*moved.shape[:-1], size).movedim(-1, axis).to(bias.dtype)
    return bias


AGENT_BIAS_RESIZE = {r'\.(?:ah|aw|ha|wa)_bias$': resize_bias_axes}  # for the skeletons' checkpoint layouts

_KIND_KEYS = {'an_bias': 'A', 'residual.0.weight': 'I', 'relative_position_bias_table': 'W'}
_STAGES = stage_summary('norm2.weight')


def attention_summary(legend: str) -> Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]:
    """A Swin / PVT skeleton checkpoint's summary (what the fit compares with the model's): blocks per stage, and per
    stage one letter per block of a zoo-layout state dict, A(gent), I(nLine), W(indow), ``-`` none of these
    (``legend`` says what that is)."""
    def summary(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        letters: dict[tuple[int, int], str] = {}
        for k in state_dict:
            m = re.match(r'^stages\.(\d+)\.blocks\.(\d+)\.attn\.(.*)$', k)
            if m and m.group(3) in _KIND_KEYS:
                letters[int(m.group(1)), int(m.group(2))] = _KIND_KEYS[m.group(3)]
        per_block = [''.join(letters.get((s, b), '-') for b in range(d))
                     for s, d in enumerate(stage_depths(state_dict))]
        return dict(_STAGES(state_dict), **{f'attention per block ({legend})': per_block})
    return summary


class AgentBiases(nn.Module):
    """The agent position biases with the official names and shapes, and their sizing to any grid.

    ``an_bias`` / ``na_bias`` ``[heads, A, 7, 7]``; ``ah_bias [1, heads, A, Hk, 1]``, ``aw_bias [1, heads, A, 1, Wk]``
    (agent -> key, sized to the build key grid); ``ha_bias [1, heads, Hq, 1, A]``, ``wa_bias [1, heads, 1, Wq, A]``
    (query -> agent, sized to the build query grid). Subclasses add the projections (so the names stay flat).

    Args:
        num_heads: attention heads.
        agent_num: agents A (a square number).
        query_size: the build query grid ``(Hq, Wq)`` (an int for a square one).
        key_size: the build key grid, default ``query_size`` (PVT's spatial reduction would make it smaller).
    """

    def __init__(self, num_heads: int, agent_num: int, query_size: int | Sequence[int],
                 key_size: int | Sequence[int] | None = None, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.num_heads, self.agent_num = num_heads, agent_num
        self.grid = agent_grid(agent_num)
        hq, wq = self.query_size = ops.size_pair(query_size, 'query_size')
        hk, wk = self.key_size = self.query_size if key_size is None else ops.size_pair(key_size, 'key_size')
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7, **dd))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7, **dd))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, hk, 1, **dd))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, wk, **dd))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, hq, 1, agent_num, **dd))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, wq, agent_num, **dd))
        if self.an_bias.device.type != 'meta':  # nothing to draw on meta (and timm's trunc_normal_ is slow there)
            for p in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
                trunc_normal_(p, std=.02)

    def biases(self, query_size: tuple[int, int], key_size: tuple[int, int] | None = None,
               agent_shape: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bias1 [heads, A', Hk*Wk], bias2 [heads, Hq*Wq, A'])`` for a query / key grid and agent grid
        (default: the key grid = the query grid, the build agent grid)."""
        key_size = query_size if key_size is None else key_size
        agent_shape = self.grid if agent_shape is None else agent_shape
        key_hw = (self.ah_bias + self.aw_bias)[0]  # [heads, A, Hk0, Wk0]
        query_hw = (self.ha_bias + self.wa_bias)[0].permute(0, 3, 1, 2)  # [heads, A, Hq0, Wq0]
        bias1 = (resize_agent_bias(self.an_bias, key_size, self.grid, agent_shape)
                 + resize_agent_bias(key_hw, key_size, self.grid, agent_shape))
        bias2 = (resize_agent_bias(self.na_bias, query_size, self.grid, agent_shape)
                 + resize_agent_bias(query_hw, query_size, self.grid, agent_shape))
        return bias1, bias2.transpose(1, 2)


class _QKV(nn.Module):
    """q, k, v projections as one ``qkv`` linear (Swin) or ``q`` + ``kv`` (PVT), split into heads on NHWC maps, and
    the output projection ``proj``."""

    def _init_qkv(self, dim: int, num_heads: int, qkv_bias: bool, separate_q: bool, dd: dict) -> None:
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.separate_q = separate_q
        if separate_q:
            self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)

    def _init_proj(self, dim: int, proj_drop: float, dd: dict) -> None:
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v ``[B, H, W, heads, head_dim]`` of an NHWC map (checked)."""
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f'{type(self).__name__} expects an NHWC map [batch, height, width, {self.dim}], got '
                             f'shape {tuple(x.shape)}')
        b, h, w, _ = x.shape
        heads = (self.num_heads, self.head_dim)  # split in the one reshape: no guards on the map size when exported
        if self.separate_q:
            k, v = self.kv(x).reshape(b, h, w, 2, *heads).unbind(3)
            return self.q(x).reshape(b, h, w, *heads), k, v
        q, k, v = self.qkv(x).reshape(b, h, w, 3, *heads).unbind(3)
        return q, k, v


def inline_residual(residual: nn.Module, mean: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """InLine's dynamic local residual: a depthwise 3x3 conv of ``v [B', C, H, W]`` whose kernels ``residual`` makes
    per image from ``mean [B, C]`` (the mean input token); ``B'`` a multiple of ``B``: consecutive maps (an image's
    windows) share their image's kernels. Returns ``[B', C, H, W]``."""
    bv, c, h, w = v.shape
    kernels = residual(mean[..., None]).reshape(mean.shape[0], c, 1, 3, 3)
    kernels = kernels.repeat_interleave(bv // mean.shape[0], dim=0).to(v.dtype)  # [B', C, 1, 3, 3]
    if torch.compiler.is_compiling():  # ONNX Conv takes no run-time group count: the 9 taps as multiply-adds
        padded = F.pad(v, (1, 1, 1, 1))
        return sum(kernels[:, :, 0, i, j, None, None] * padded[:, :, i:i + h, j:j + w]
                   for i in range(3) for j in range(3))
    out = F.conv2d(v.reshape(1, bv * c, h, w), kernels.reshape(bv * c, 1, 3, 3), padding=1, groups=bv * c)
    return out.reshape(bv, c, h, w)


def inline_parts(dim: int, num_heads: int, kernel_func: str, dd: dict) -> tuple[str, nn.Sequential]:
    """What every InLine attention module holds besides its projections: ``kernel_func`` (checked against
    ``INLINE_KERNELS``) and ``residual``, the net that makes the per-image 3x3 kernels from the mean token (1x1 conv
    grouped by head, GELU, 1x1 grouped conv to 9 taps per channel; :func:`inline_residual`)."""
    if kernel_func not in INLINE_KERNELS:
        raise ValueError(f'kernel_func must be one of {INLINE_KERNELS}, got {kernel_func!r}')
    return kernel_func, nn.Sequential(nn.Conv1d(dim, dim, kernel_size=1, groups=num_heads, **dd), nn.GELU(),
                                      nn.Conv1d(dim, dim * 9, kernel_size=1, groups=num_heads, **dd))


@register_notrace_module  # torch.fx: a leaf (agent grid and bias sizes from the map)
class AgentAttention(AgentBiases, _QKV):
    """Agent attention over a whole NHWC map (Agent-Swin's and Agent-PVT's ``AgentAttention``, sr_ratio 1).

    Agents: the queries pooled to the agent grid; ``softmax(q a^T s + bias2) softmax(a k^T s + bias1) v``
    (:func:`ops.agent_attention`), plus ``dwc`` (depthwise 3x3 conv) of v, then ``proj``.

    Args:
        dim, num_heads: width and heads.
        agent_num: agents (a square number).
        size: the build map (the official ``window_size``: Swin's window / PVT's patch grid); the biases are sized
            to it and resized at any other map (see the module docstring).
        qkv_bias: bias in the q / k / v projections.
        separate_q: ``q`` + ``kv`` linears (PVT) instead of one ``qkv`` (Swin).
        attn_drop, proj_drop: dropout on both attentions' probabilities / after ``proj``.
        agent_shape: the agent grid at run time (the official downstream ``downstream_agent_shape``); ``None`` keeps
            the build grid. An attribute, settable after construction.
    """

    def __init__(self, dim: int, num_heads: int, agent_num: int, size: int | Sequence[int], qkv_bias: bool = True,
                 separate_q: bool = False, attn_drop: float = 0., proj_drop: float = 0.,
                 agent_shape: Sequence[int] | None = None, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__(num_heads, agent_num, size, **dd)
        self._init_qkv(dim, num_heads, qkv_bias, separate_q, dd)
        self.agent_shape = None if agent_shape is None else ops.size_pair(tuple(agent_shape), 'agent_shape')
        self.attn_drop = attn_drop
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self._init_proj(dim, proj_drop, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x)
        b, h, w, c = x.shape
        agent_shape = self.agent_shape or self.grid
        agents = pool_agents(q, agent_shape)
        bias1, bias2 = self.biases((h, w), agent_shape=agent_shape)
        out = ops.agent_attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), agents, bias1, bias2,
                                  scale=self.scale, dropout_p=self.attn_drop if self.training else 0.,
                                  token_grid=(h, w))
        out = out.reshape(b, h, w, c) + self.dwc(v.reshape(b, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, agent_num={self.agent_num}, '
                f'build_size={self.query_size}, agent_shape={self.agent_shape or self.grid}')


@register_notrace_module  # torch.fx: a leaf (map checks and sizes)
class InLineAttention(_QKV):
    """InLine attention over a whole NHWC map (InLine-Swin's and InLine-PVT's ``InLineAttention``, sr_ratio 1).

    ``(s/N) phi(q) (phi(k)^T v) + (1 - s phi(q) . mean phi(k)) mean v`` (:func:`ops.linear_attention` with
    ``normalizer='inline'``, s = head_dim ** -0.5), plus a per-image depthwise 3x3 conv of v whose kernels
    ``residual`` (1x1 grouped conv, GELU, 1x1 grouped conv to 9 taps per channel) makes from the mean input token;
    then ``proj``. No position parameters: any map size runs with the same weights.

    Args:
        dim, num_heads: width and heads (the ``residual`` convs are grouped by head).
        qkv_bias, separate_q: as :class:`AgentAttention`.
        kernel_func: the feature map phi, one of ``INLINE_KERNELS`` (official default ``'identity'``).
        proj_drop: dropout after ``proj`` (the official module's ``attn_drop`` is unused: there is no attention
            matrix to drop from).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, separate_q: bool = False,
                 kernel_func: str = 'identity', proj_drop: float = 0., device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self._init_qkv(dim, num_heads, qkv_bias, separate_q, dd)
        self.kernel_func, self.residual = inline_parts(dim, num_heads, kernel_func, dd)
        self._init_proj(dim, proj_drop, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x)
        b, h, w, c = x.shape
        out = ops.linear_attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), feature_map=self.kernel_func,
                                   normalizer='inline', scale=self.scale, token_grid=(h, w)).reshape(b, h, w, c)
        residual = inline_residual(self.residual, x.mean(dim=(1, 2)), v.reshape(b, h, w, c).permute(0, 3, 1, 2))
        out = out + residual.permute(0, 2, 3, 1)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, kernel_func={self.kernel_func!r}'
