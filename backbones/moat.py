"""MOAT: MBConv stages, then MOAT blocks (MBConv carrying the downsampling, then attention in place of the MLP).

Paper: `MOAT: Alternating Mobile Convolution and Attention Brings Strong Vision Models` (ICLR 2023) -
https://arxiv.org/abs/2210.01820. Official code and TF1 checkpoints (Apache-2.0): google-research/deeplab2
(``model/pixel_encoder/moat.py``, ``model/layers/moat_blocks.py``, ``model/layers/moat_attention.py``).

* Stem: 3x3 conv (stride 2, bias) -> BN -> GELU -> 3x3 conv (bias); stride 2.
* MBConv block (stages 1-2): ``shortcut + mbconv(x)`` with mbconv = pre-norm BN -> 1x1 expand (x4, no bias) -> BN ->
  GELU -> 3x3 depthwise (the stage's stride, no bias) -> BN -> GELU -> squeeze-excitation (``int(0.25 * out)``
  channels, SiLU: TF's default, not GELU) -> 1x1 shrink (bias). The shortcut average-pools (``pool_size``, the
  stride; 2 for ImageNet, deeplab2's downstream default 3) and projects (1x1 conv, bias) when the width changes.
* MOAT block (stages 3-4): the same MBConv without SE, then ``x + attn(LayerNorm(x))``: multi-head self-attention
  with head_dim 32, separate q/k/v/o projections (with bias) and a 2-D relative position bias per head
  (``[heads, 2P - 1, 2P - 1]``, P = 14 / 7, indexed ``key - query``); no MLP.
* Head: mean over the map -> LayerNorm -> linear (``NormMlpClassifierHead``).
* TF details kept: BN eps 1e-3 and momentum 0.01 (Keras' 0.99), LayerNorm eps 1e-5, exact GELU, TF ``'same'``
  padding for every stride-2 conv and pool (padding at the bottom/right first; the pools average valid elements
  only), drop-path rate ``rate * block / total_blocks``, normal(0.02) init of every kernel and bias 0.

Attention: global over the whole map by default (the ImageNet setting) through :func:`ops.dense_attention` with the
bias expanded from the table; with ``window_size`` per stage (dense prediction: 14x14 / 7x7) window attention through
:func:`ops.window_attention` (maps that are not a multiple of the window: zero-padded, padded keys masked; the
official code needs multiples), optionally global in the last block of each MOAT stage
(``global_attention_at_end``), the paper's downstream setting. Any input size: where the attended area differs from
the table's P x P, the table is resized bilinearly (half-pixel, TF's ``tf.image.resize``) to ``2h - 1 x 2w - 1``, as
deeplab2 does; the parameter keeps its shape.

The released checkpoints come "with" and "without positional embedding": in deeplab2 that is the relative position
bias (``no_pe``: ``relative_position_embedding_type=None``), there is no absolute position embedding in MOAT;
``*_no_pe`` variants have no bias table. :func:`read_weights`, the family's reader (so ``pretrained=True`` and every
other loader of the zoo read the released tarballs), converts those TF1 checkpoints (variables named
``moat/block_{SS}_{BB}/...``, read by :func:`read_tf_checkpoint`) to this layout, raw and EMA copies (the default).
"""
from __future__ import annotations

import glob
import os
import re
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import (
    DropPath,
    LayerNorm2d,
    NormMlpClassifierHead,
    SEModule,
    register_notrace_module,
)
from timm.layers.helpers import get_device_dtype

import ops

from ._family import Family, Variant, register
from ._hierarchical import HierarchicalModel, Stage, check_image, stage_count
from ._tf_same import SameAvgPool2d, SameConv2d
from .checkpoint import Layout, read_checkpoint, stage_summary

__all__ = ['MOAT', 'MBConvBlock', 'MOATBlock', 'MOATAttention', 'from_tf', 'read_tf_checkpoint', 'read_weights',
           'tf_to_torch_name']

_BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)  # Keras defaults: epsilon 1e-3, momentum 0.99
_LN_EPS = 1e-5


class MBConvBlock(nn.Module):
    """Pre-norm inverted bottleneck with an average-pool shortcut (NCHW); SE when ``se_ratio`` is set."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            expansion: int = 4,
            se_ratio: float | None = 0.25,
            pool_size: int = 2,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        inner = out_chs * expansion
        self.pool = SameAvgPool2d(pool_size, stride) if stride > 1 else None  # TF's: padding left out of the averages
        self.shortcut_conv = nn.Conv2d(in_chs, out_chs, 1, **dd) if in_chs != out_chs else None
        self.pre_norm = _BN(in_chs, **dd)
        self.expand_conv = nn.Conv2d(in_chs, inner, 1, bias=False, **dd)
        self.expand_norm = _BN(inner, **dd)
        self.depthwise_conv = SameConv2d(inner, inner, 3, stride=stride, groups=inner, bias=False, **dd)
        self.depthwise_norm = _BN(inner, **dd)
        self.act = nn.GELU()
        self.se = SEModule(inner, rd_channels=max(1, int(out_chs * se_ratio)), act_layer=nn.SiLU,
                           **dd) if se_ratio else None
        self.shrink_conv = nn.Conv2d(inner, out_chs, 1, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return x if self.shortcut_conv is None else self.shortcut_conv(x)

    def mbconv(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.expand_norm(self.expand_conv(self.pre_norm(x))))
        x = self.act(self.depthwise_norm(self.depthwise_conv(x)))
        if self.se is not None:
            x = self.se(x)
        return self.shrink_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.drop_path(self.mbconv(x))


def _dense_bias(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[heads, 2h - 1, 2w - 1]`` (indexed ``key - query + size - 1`` per axis, the ops' rpb convention) ->
    the ``[heads, hw, hw]`` bias of global attention over an ``h x w`` map."""
    rel_h, rel_w = (torch.arange(n, device=table.device) for n in (height, width))
    rel_h = rel_h[None, :] - rel_h[:, None] + height - 1  # [query row, key row]
    rel_w = rel_w[None, :] - rel_w[:, None] + width - 1
    bias = table[:, rel_h[:, None, :, None], rel_w[None, :, None, :]]  # [heads, qh, qw, kh, kw]
    return bias.reshape(table.shape[0], height * width, height * width)


@register_notrace_module  # torch.fx: a leaf (the bias table is resized to the map size: Python on the size)
class MOATAttention(nn.Module):
    """Multi-head self-attention over ``[B, H, W, C]`` with a 2-D relative position bias, global or in windows.

    Parameters as the official ``Attention`` (q/k/v/o dense layers with bias, ``relative_position_embedding`` here
    ``rpb``); ``window_size`` None attends over the whole map.
    """

    def __init__(
            self,
            dim: int,
            head_dim: int = 32,
            window_size: Sequence[int] | None = None,
            rpb_size: int | None = 7,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % head_dim:
            raise ValueError(f'dim ({dim}) must be a multiple of head_dim ({head_dim})')
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.window_size = None if window_size is None else tuple(int(w) for w in window_size)
        if self.window_size is not None and (len(self.window_size) != 2 or min(self.window_size) < 1):
            raise ValueError(f'window_size must be two positive ints (height, width) or None, got {window_size!r}')
        self.q = nn.Linear(dim, dim, **dd)
        self.k = nn.Linear(dim, dim, **dd)
        self.v = nn.Linear(dim, dim, **dd)
        self.o = nn.Linear(dim, dim, **dd)
        self.rpb_size = rpb_size
        if rpb_size:
            self.rpb = nn.Parameter(torch.empty(self.num_heads, 2 * rpb_size - 1, 2 * rpb_size - 1, **dd))
            nn.init.normal_(self.rpb, std=.02)  # the official initializer
        else:
            self.register_parameter('rpb', None)

    def table(self, height: int, width: int) -> torch.Tensor | None:
        """The bias table for an attended area of ``height x width``: ``[heads, 2h - 1, 2w - 1]``."""
        if self.rpb is None:
            return None
        size = (2 * height - 1, 2 * width - 1)
        if not torch.compiler.is_compiling() and tuple(self.rpb.shape[1:]) == size:
            return self.rpb  # compiled / exported: always resized (exact at the same size), no guard on the size
        return F.interpolate(self.rpb[None], size=size, mode='bilinear', align_corners=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        shape = (B, H, W, self.num_heads, self.head_dim)
        q, k, v = self.q(x).view(shape), self.k(x).view(shape), self.v(x).view(shape)
        if self.window_size is None:
            table = self.table(H, W)
            bias = None if table is None else _dense_bias(table, H, W)
            flat = (B, H * W, self.num_heads, self.head_dim)
            out = ops.dense_attention(q.reshape(flat), k.reshape(flat), v.reshape(flat), bias=bias, token_grid=(H, W))
        else:
            out = ops.window_attention(q, k, v, self.window_size, padding='masked', rpb=self.table(*self.window_size))
        return self.o(out.reshape(B, H, W, C))

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, window_size={self.window_size or "global"}, rpb_size={self.rpb_size}'


class MOATBlock(MBConvBlock):
    """MBConv (no SE; carries the stage's stride) then ``x + attention(LayerNorm(x))`` (NCHW in and out);
    ``mbconv``: :class:`MBConvBlock`'s ``stride``, ``expansion``, ``pool_size``, ``drop_path``."""

    def __init__(self, in_chs: int, out_chs: int, head_dim: int = 32, window_size: Sequence[int] | None = None,
                 rpb_size: int | None = 7, device=None, dtype=None, **mbconv: Any):
        dd = {'device': device, 'dtype': dtype}
        super().__init__(in_chs, out_chs, se_ratio=None, **mbconv, **dd)
        self.attention_norm = nn.LayerNorm(out_chs, eps=_LN_EPS, **dd)
        self.attention = MOATAttention(out_chs, head_dim, window_size, rpb_size, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attention(self.attention_norm(x)))
        return x.permute(0, 3, 1, 2)


class MOATStem(nn.Module):
    """3x3 conv (stride 2, TF 'same' padding) -> BN -> GELU -> 3x3 conv; both convs with bias."""

    def __init__(self, in_chans: int, stem_size: Sequence[int], device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.conv1 = SameConv2d(in_chans, stem_size[0], 3, stride=2, **dd)
        self.norm1 = _BN(stem_size[0], **dd)
        self.act1 = nn.GELU()
        self.conv2 = SameConv2d(stem_size[0], stem_size[1], 3, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act1(self.norm1(self.conv1(x))))


class MOAT(HierarchicalModel):
    """MOAT (see the module docstring). ``window_size``: None (global attention everywhere, the ImageNet setting) or
    one entry per stage (None or ``(h, w)``; the MBConv stages ignore theirs), e.g. ``(None, None, (14, 14), (7, 7))``
    for dense prediction; ``global_attention_at_end`` makes the last block of each MOAT stage global."""

    stem_pattern = r'^stem'
    # ours: the official TF1 checkpoints are converted when read (read_weights)
    checkpoint_layout = Layout(name='MOAT', marker=r'\.depthwise_conv\.weight$', summary=stage_summary(
        'shrink_conv.bias', {'bias tables': ('attention.rpb', lambda t: tuple(t.shape))}))

    def __init__(
            self,
            stem_size: Sequence[int] = (64, 64),
            block_types: Sequence[str] = ('mbconv', 'mbconv', 'moat', 'moat'),
            depths: Sequence[int] = (2, 3, 7, 2),
            dims: Sequence[int] = (96, 192, 384, 768),
            expansion: int = 4,
            se_ratio: float = 0.25,
            head_dim: int = 32,
            window_size: Sequence[Sequence[int] | None] | None = None,
            rpb_sizes: Sequence[int | None] = (None, None, 14, 7),
            rel_pos_bias: bool = True,
            global_attention_at_end: bool = False,
            pool_size: int = 2,
            drop_path_rate: float = 0.,
            **kwargs: Any,
    ):
        super().__init__(**kwargs)
        dd = self.factory_kwargs
        n = stage_count(depths, block_types=block_types, dims=dims, rpb_sizes=rpb_sizes)
        if any(t not in ('mbconv', 'moat') for t in block_types):
            raise ValueError(f"block_types must be 'mbconv' or 'moat', got {block_types}")
        windows = [None] * n if window_size is None else list(window_size)
        if len(windows) != n:
            raise ValueError(f'window_size needs one entry per stage ({n}) or None, got {window_size!r}')
        self.stem = MOATStem(self.in_chans, stem_size, **dd)
        total, index = sum(depths), 0
        in_chs, stages = stem_size[-1], []
        for s in range(n):
            blocks = []
            for b in range(depths[s]):
                common = dict(stride=2 if b == 0 else 1, expansion=expansion, pool_size=pool_size,
                              drop_path=drop_path_rate * index / total, **dd)  # the official rate schedule
                if block_types[s] == 'mbconv':
                    blocks.append(MBConvBlock(in_chs, dims[s], se_ratio=se_ratio, **common))
                else:
                    last_global = global_attention_at_end and b == depths[s] - 1
                    blocks.append(MOATBlock(in_chs, dims[s], head_dim=head_dim,
                                            window_size=None if last_global else windows[s],
                                            rpb_size=rpb_sizes[s] if rel_pos_bias else None, **common))
                in_chs, index = dims[s], index + 1
            stages.append(Stage(None, blocks, nhwc=False))
        self._set_stages(stages, dims)
        # the final LayerNorm follows the pooling, in the head
        self._set_head(dims[-1], nn.Identity(), NormMlpClassifierHead(
            dims[-1], self.num_classes, pool_type=self.global_pool, drop_rate=self.drop_rate,
            norm_layer=partial(LayerNorm2d, eps=_LN_EPS), **dd))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the official initializers: normal(0.02) kernels (convs, dense layers; the rpb tables init themselves),
        # zero biases
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith('.rpb')}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool, **get_device_dtype(self))
        if global_pool is not None:
            self.global_pool = global_pool

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans)
        return self.stem(x)


# ---------------------------------------------------------------------------------------------------------------
# Official (TF1) checkpoints

_EMA = '/ExponentialMovingAverage'
_BN_NAMES = dict(gamma='weight', beta='bias', moving_mean='running_mean', moving_variance='running_var')
_LAYERS = dict(conv_0='conv1', norm_0='norm1', conv_1='conv2', reduce_conv2d='fc1', expand_conv2d='fc2')


def tf_to_torch_name(name: str) -> str | None:
    """A TF variable name of deeplab2's MOAT (``moat/block_02_00/attention/q/weight``, ``moat/stem/conv_0/kernel``,
    TF2's ``:0`` suffix and scope-less stem names accepted) -> ours, or None for anything else (optimizer slots,
    ``global_step``)."""
    name = re.sub(r':0$', '', name)
    name = re.sub(r'^(?:moat/)?(?:stem/)?((?:conv|norm)_\d/)', r'moat/stem/\1', name)
    parts = name.split('/')
    if len(parts) < 3 or parts[0] != 'moat':
        return None
    m = re.fullmatch(r'block_(\d+)_(\d+)', parts[1])
    if m:
        prefix, rest = f'stages.{int(m.group(1))}.blocks.{int(m.group(2))}', parts[2:]
    elif parts[1] == 'stem':
        prefix, rest = 'stem', parts[2:]
    elif parts[1] in ('final_layer_norm', 'logits_head'):
        prefix, rest = 'head', ['norm' if parts[1] == 'final_layer_norm' else 'fc', *parts[2:]]
    else:
        return None
    *layers, leaf = rest
    if leaf == 'relative_position_embedding':
        return f'{prefix}.{".".join(layers)}.rpb'
    leaf = dict(kernel='weight', depthwise_kernel='weight', **_BN_NAMES).get(leaf, leaf)
    if leaf not in ('weight', 'bias', 'running_mean', 'running_var') or not layers:
        return None
    return '.'.join([prefix, *(_LAYERS.get(layer, layer) for layer in layers), leaf])


def _to_torch_layout(name: str, value: Any) -> torch.Tensor:
    """TF kernel layouts -> torch: conv HWIO -> OIHW, depthwise HWC1 -> C1HW, trailing-dims dense -> 2-D."""
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if name == 'head.fc.weight':  # the 1x1-conv logits head [1, 1, C, classes] -> Linear [classes, C]
        return t.reshape(t.shape[-2], t.shape[-1]).t().contiguous()
    if name.endswith('.weight') and t.ndim == 4:
        return t.permute(2, 3, 0, 1).contiguous() if '.depthwise_conv.' in name else t.permute(3, 2, 0, 1).contiguous()
    if re.search(r'\.attention\.[qkv]\.weight$', name):  # [C, heads, head_dim] -> [heads * head_dim, C]
        return t.reshape(t.shape[0], -1).t().contiguous()
    if name.endswith('.attention.o.weight'):  # [heads, head_dim, C] -> [C, heads * head_dim]
        return t.reshape(-1, t.shape[-1]).t().contiguous()
    if re.search(r'\.attention\.[qkv]\.bias$', name):
        return t.reshape(-1)
    return t


def from_tf(variables: Mapping[str, Any], source: str = 'TF checkpoint') -> dict[str, dict[str, torch.Tensor]]:
    """TF variables -> a checkpoint in our names and layouts: ``state_dict`` the raw weights, ``state_dict_ema`` the
    EMA ones (each variable's ``/ExponentialMovingAverage`` copy where it has one) when the file holds EMA copies;
    BatchNorm step counters added, everything else (optimizer slots, ``global_step``) dropped. Raises ``ValueError``
    naming ``source`` when nothing of a MOAT is there."""
    raw = {k: v for k, v in variables.items() if not k.endswith(_EMA)}
    copies = {'state_dict': raw}
    if len(raw) < len(variables):
        copies['state_dict_ema'] = {k: variables.get(k + _EMA, v) for k, v in raw.items()}
    checkpoint = {}
    for entry, tf_variables in copies.items():
        out: dict[str, torch.Tensor] = {}
        for key, value in tf_variables.items():
            name = tf_to_torch_name(key)
            if name is not None:
                out[name] = _to_torch_layout(name, value)
        if not any(k.endswith('.depthwise_conv.weight') for k in out):
            raise ValueError(f'{source}: not a MOAT checkpoint (no moat/block_*/depthwise_conv variables)')
        for name in [k for k in out if k.endswith('.running_mean')]:
            out[name.replace('.running_mean', '.num_batches_tracked')] = torch.zeros((), dtype=torch.long)
        checkpoint[entry] = out
    return checkpoint


def _tf_checkpoint_prefix(path: str) -> str:
    """The checkpoint prefix (``<prefix>.index`` exists) of a prefix, or the only one inside a folder."""
    if os.path.isfile(path + '.index'):
        return path
    if os.path.isfile(path) and path.endswith('.index'):
        return path[:-len('.index')]
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, '**', '*.index'), recursive=True))
        if len(found) == 1:
            return found[0][:-len('.index')]
        raise ValueError(f'{path}: expected one TF checkpoint (*.index) inside, found {len(found)}')
    raise FileNotFoundError(f'no TF checkpoint at {path} (neither {path}.index nor a folder or .tar.gz holding one)')


def read_tf_checkpoint(path: str) -> dict[str, Any]:
    """Every variable of a TF (1 or 2) checkpoint as ``{name: numpy array}``.

    ``path``: a checkpoint prefix, a folder holding one checkpoint, or a ``.tar.gz`` of one (the MOAT releases),
    unpacked into a temporary folder. Needs ``tensorflow`` (not a dependency of the zoo; the pure-Python
    ``tensorflow-checkpoint-reader`` 0.2.2 fails on Python 3.11 and numpy 2).
    """
    path = str(path)
    if path.endswith(('.tar.gz', '.tgz', '.tar')):
        with tempfile.TemporaryDirectory() as folder:
            with tarfile.open(path) as tar:
                tar.extractall(folder, filter='data')
            return read_tf_checkpoint(folder)
    prefix = _tf_checkpoint_prefix(path)
    try:
        from tensorflow.train import load_checkpoint
    except ImportError as e:
        raise ImportError(f'reading a TF checkpoint needs tensorflow (pip install tensorflow-cpu): {e}') from None
    reader = load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in sorted(reader.get_variable_to_shape_map())}


def read_weights(path: str) -> dict[str, Any]:
    """The MOAT family's reader (:attr:`backbones._family.Family.read_weights`, used by every loader of the zoo): a
    torch file (``.pth`` / ``.pt`` / ``.bin``, read as any other; ``.safetensors``) as it is, anything else (the
    official ``.tar.gz``, a folder or a prefix) as a TF1 checkpoint, converted (:func:`from_tf`)."""
    path = str(path)
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file

        return load_file(path)
    if path.endswith(('.pth', '.pt', '.bin')):
        return read_checkpoint(path)
    return from_tf(read_tf_checkpoint(path), path)


# ---------------------------------------------------------------------------------------------------------------
# Variants

_CKPT = 'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/{}.tar.gz'
# input normalisation: the model card's "option 1" (ImageNet mean/std, x255 there) or "option 2" (127.5 / 127.5)
_OPTION_2 = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)


def _pair(name: str, doc: str, doc_no_pe: str, args: dict[str, Any], tag: str, release: str, res: int,
          **cfg: Any) -> dict[str, Variant]:
    """``name`` and ``name_no_pe``: the TF1 releases with and without the relative position bias
    (``<release>_w/_wo_position_embedding.tar.gz``) at ``res``."""
    # crop_pct / interpolation: not published with the checkpoints; timm's values for its TF MaxViT ports
    cfg = dict(cfg, input_size=(3, res, res), crop_pct=0.95 if res <= 256 else 1.0)
    return {name: Variant(doc, args, {tag: dict(cfg, url=_CKPT.format(f'{release}_w_position_embedding'))}),
            f'{name}_no_pe': Variant(doc_no_pe, dict(args, rel_pos_bias=False),
                                     {tag: dict(cfg, url=_CKPT.format(f'{release}_wo_position_embedding'))})}


def _tiny(i: int, width: int, params: str, params_no_pe: str, gflops: str) -> dict[str, Variant]:
    return _pair(f'tiny_moat_{i}', f'tiny-MOAT-{i}: {params}M params, {gflops} GFLOPs at 256.',
                 f'tiny-MOAT-{i} without the relative position bias: {params_no_pe}M params, {gflops} GFLOPs at 256.',
                 dict(stem_size=(width, width), depths=(2, 3, 7, 2), dims=(width, 2 * width, 4 * width, 8 * width)),
                 'tf_in1k_256', f'tiny_moat{i}_imagenet_1k_256', 256)


# The TF1 releases hold raw and EMA copies; the EMA ones are what a TF eval reads.
register(Family(
    'moat', __name__, MOAT, ema=True, read_weights=read_weights,
    cfg=dict(first_conv='stem.conv1', license='apache-2.0', origin_url='https://github.com/google-research/deeplab2',
             paper_ids='arXiv:2210.01820',
             paper_name='MOAT: Alternating Mobile Convolution and Attention Brings Strong Vision Models'),
    variants={
        **_pair('moat_0', 'MOAT-0 (with the relative position bias): 27.8M params, 5.7 GFLOPs at 224.',
                'MOAT-0 without the relative position bias ("without positional embedding"): 27.8M params, 5.7 GFLOPs.',
                dict(stem_size=(64, 64), depths=(2, 3, 7, 2), dims=(96, 192, 384, 768)),
                'tf_in1k', 'moat0_imagenet_1k_224', 224),
        **_pair('moat_1', 'MOAT-1: 41.6M params, 9.1 GFLOPs at 224.',
                'MOAT-1 without the relative position bias: 41.5M params, 9.1 GFLOPs at 224.',
                dict(stem_size=(64, 64), depths=(2, 6, 14, 2), dims=(96, 192, 384, 768)),
                'tf_in1k', 'moat1_imagenet_1k_224', 224),
        **_pair('moat_2', 'MOAT-2 (ImageNet-22k -> 1k at 384): 73.4M params, 54.3 GFLOPs at 384.',
                'MOAT-2 without the relative position bias: 73.2M params, 53.8 GFLOPs at 384.',
                dict(stem_size=(128, 128), depths=(2, 6, 14, 2), dims=(128, 256, 512, 1024)),
                'tf_in22k_ft_in1k_384', 'moat2_imagenet_22k_and_1k_384', 384, **_OPTION_2),
        **_pair('moat_3', 'MOAT-3 (ImageNet-22k -> 1k at 512): 190.0M params, 271.0 GFLOPs at 512.',
                'MOAT-3 without the relative position bias: 189.5M params, 266.1 GFLOPs at 512.',
                dict(stem_size=(160, 160), depths=(2, 12, 28, 2), dims=(160, 320, 640, 1280)),
                'tf_in22k_ft_in1k_512', 'moat3_imagenet_22k_and_1k_512', 512, **_OPTION_2),
        **_pair('moat_4', 'MOAT-4 (ImageNet-22k -> 1k at 512): 483.2M params, 648.5 GFLOPs at 512.',
                'MOAT-4 without the relative position bias: 482.5M params, 640.6 GFLOPs at 512.',
                dict(stem_size=(256, 256), depths=(2, 12, 28, 2), dims=(256, 512, 1024, 2048)),
                'tf_in22k_ft_in1k_512', 'moat4_imagenet_22k_and_1k_512', 512, **_OPTION_2),
        **_tiny(0, 32, '3.4', '3.3', '1.1'),
        **_tiny(1, 40, '5.1', '5.1', '1.6'),
        **_tiny(2, 56, '9.8', '9.7', '3.0'),
        **_tiny(3, 80, '19.5', '19.5', '6.0'),
    }))
