"""The timm contract of a hierarchical backbone (stem -> stages -> norm -> ClassifierHead), written once.

A family's model subclasses :class:`HierarchicalModel`, passes the arguments every model shares (``in_chans``,
``num_classes``, ``global_pool``, ``drop_rate``) on to its ``__init__`` and builds ``self.patch_embed`` (the stem),
then the stages (:class:`Stage` or its own NCHW stages with a ``grad_checkpointing`` flag; :meth:`_set_stages` sets
``self.stages`` and ``self.feature_info``), then the final norm (on the last stage's output) and the classifier
(:meth:`_set_head`), with the helpers here (:func:`stage_count`, :func:`check_image`, :func:`trunc_normal_init`);
it overrides ``no_weight_decay`` (none by default) and ``group_tail`` / ``group_matcher`` where its own differ. A model
whose final features are more than a norm (RAVLT: 1x1 conv -> BN -> Swish) overrides the ``_final*`` hooks; one
whose stem is not ``patch_embed`` overrides ``_stem``. ``load_pretrained`` (timm's ``custom_load``) comes from
:class:`~backbones.checkpoint.PretrainedMixin`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import ClassifierHead, LayerNorm2d, trunc_normal_
from timm.layers.helpers import get_device_dtype
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn

import ops

from .checkpoint import PretrainedMixin

__all__ = ['HierarchicalModel', 'PatchStem', 'Stage', 'check_image', 'stage_count', 'trunc_normal_init']


def check_image(x: torch.Tensor, in_chans: int, min_size: int = 1, why: str = '') -> None:
    """The input check of every zoo model: ``ValueError`` unless ``x`` is an image batch ``[B, in_chans, H, W]`` of
    at least ``min_size`` px per side (``why``: what needs that size, for the message). Skipped under torch.fx
    symbolic tracing (a ``Proxy`` has no sizes; the traced graph's ops check their own inputs)."""
    if isinstance(x, torch.fx.Proxy):
        return
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(f'expected an image batch [B, {in_chans}, H, W] (in_chans={in_chans}), got a tensor of shape '
                         f'{tuple(x.shape)}')
    if min(x.shape[2:]) < min_size:
        raise ValueError(f'inputs need at least {min_size} px per side{f" ({why})" if why else ""}, got '
                         f'{tuple(x.shape[2:])}')


def stage_count(depths: Sequence[int], **per_stage: Sequence | None) -> int:
    """The number of stages, ``len(depths)``; ``ValueError`` naming the ``per_stage`` arguments (None: not given)
    that do not have one entry per stage."""
    n = len(depths)
    wrong = {k: v for k, v in per_stage.items() if v is not None and len(v) != n}
    if wrong:
        raise ValueError(f'{", ".join(wrong)} need one entry per stage ({n}: depths={tuple(depths)}), got '
                         + ', '.join(f'{k}={v}' for k, v in wrong.items()))
    return n


def trunc_normal_init(module: nn.Module, types: tuple[type, ...] = (nn.Linear,)) -> bool:
    """The init most official codes share (for ``self.apply``): truncated-normal(0.02) weights and zero biases for
    modules of ``types``; nothing to draw on the meta device. True when ``module`` is one of ``types``."""
    if not isinstance(module, types):
        return False
    if module.weight.device.type != 'meta':
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return True


class PatchStem(nn.Module):
    """Non-overlapping ``patch_size`` patches (the image zero-padded to a multiple, bottom / right, as the official
    downstream stems) and a LayerNorm (eps 1e-5, nn.LayerNorm's default); checks the input (``min_size``, ``why``:
    :func:`check_image`). The Swin-layout stem of DiNAT_s, LITv2 and the Swin skeleton."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 96, patch_size: int = 4, min_size: int = 1, why: str = '',
                 device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.in_chans, self.patch_size, self.min_size, self.why = in_chans, patch_size, min_size, why
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = LayerNorm2d(embed_dim, eps=1e-5, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_chans, self.min_size, self.why)
        p = self.patch_size
        return self.norm(self.proj(ops.pad_to_multiple(x, p, (2, 3))[0]))  # a form torch.export simplifies


class Stage(nn.Module):
    """``downsample`` (None: none), then ``blocks`` (gradient-checkpointed with ``grad_checkpointing``); NCHW in and
    out, the blocks on NHWC maps unless ``nhwc`` is False."""

    def __init__(self, downsample: nn.Module | None, blocks: Sequence[nn.Module], nhwc: bool = True):
        super().__init__()
        self.grad_checkpointing = False
        self.nhwc = nhwc
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if not self.nhwc:
            return self.run_blocks(x)
        return self.run_blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class HierarchicalModel(PretrainedMixin, nn.Module):
    """The shared contract (see the module docstring).

    Args:
        in_chans: input image channels.
        num_classes: classifier outputs (0 for no classifier).
        global_pool: classifier pooling type.
        drop_rate: classifier dropout.
        device, dtype: where and in which dtype to create the parameters (timm's factory kwargs), kept as
            ``factory_kwargs`` for the family's constructor and :meth:`_set_head`.
    """

    patch_embed: nn.Module
    stages: nn.Sequential
    norm: nn.Module
    head: nn.Module
    feature_info: list[dict[str, Any]]
    stem_pattern = r'^patch_embed'  # group_matcher's stem (parameter names before the first stage)
    stem_feature = False  # True: the stem's output is feature level 0 (``feature_info[0]``), stage i level i + 1
    stage_entry = r'downsample'  # group_matcher: a stage's parameters in front of its blocks (a regex)
    # group_matcher's groups after the stages' blocks: (regex, ordinal) as timm's
    group_tail: tuple[tuple[str, tuple[int, ...]], ...] = ((r'^norm', (99999,)),)

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg', drop_rate: float = 0.,
                 device=None, dtype=None):
        super().__init__()
        self.in_chans, self.num_classes, self.global_pool = in_chans, num_classes, global_pool
        self.drop_rate = drop_rate
        self.factory_kwargs = {'device': device, 'dtype': dtype}

    def _set_stages(self, stages: Sequence[nn.Module], widths: Sequence[int]) -> None:
        """``self.stages`` and their feature levels: stage ``i`` gives ``widths[i]`` channels at stride ``4 * 2 ** i``
        (after the stem's level, with ``stem_feature``)."""
        self.stages = nn.Sequential(*stages)
        self.feature_info = [*getattr(self, 'feature_info', ()), *(
            dict(num_chs=w, reduction=4 * 2 ** i, module=f'stages.{i}') for i, w in enumerate(widths))]

    def _set_head(self, num_features: int, norm: nn.Module, head: nn.Module | None = None) -> None:
        """The final ``norm`` and the classifier ``head`` on ``num_features`` channels (by default timm's
        ``ClassifierHead`` with the shared arguments)."""
        self.num_features = self.head_hidden_size = num_features
        self.norm = norm
        self.head = head if head is not None else ClassifierHead(
            num_features, self.num_classes, pool_type=self.global_pool, drop_rate=self.drop_rate,
            **self.factory_kwargs)

    @classmethod
    def feature_cfg(cls, args: dict[str, Any]) -> dict[str, Any]:
        """timm's ``feature_cfg`` for a model built from ``args`` (popping ``out_indices``): every level by default."""
        levels = len(args['depths']) + cls.stem_feature
        return dict(flatten_sequential=True, out_indices=args.pop('out_indices', tuple(range(levels))))

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """The image -> the first stage's input."""
        return self.patch_embed(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output -> the features the head pools."""
        return self.norm(x)

    def _final_on_intermediate(self, x: torch.Tensor) -> torch.Tensor:
        """``forward_intermediates(norm=True)`` on the last stage's output (only a norm sized for it applies)."""
        return self.norm(x)

    def _prune_final(self) -> bool:
        """Drop the final features' layers; True when that changes the features' width."""
        self.norm = nn.Identity()
        return False

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=self.stem_pattern,
            blocks=r'^stages\.(\d+)' if coarse else [
                (rf'^stages\.(\d+)\.{self.stage_entry}', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                *self.group_tail,
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that take no weight decay beyond timm's defaults (1-D tensors, biases): none unless the family
        says (the official sets of most families name ``pos_embed`` / ``cls_token``, which they do not have)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        # the new classifier goes where the model's parameters are (the head may have none left after reset(0))
        self.head.reset(num_classes, pool_type=global_pool, in_features=self.num_features, **get_device_dtype(self))
        if global_pool is not None:
            self.global_pool = global_pool

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature-level outputs (NCHW or NHWC) for ``indices`` (last n if int, all if None), and the final features.

        The levels are the stages' outputs, preceded by the stem's with ``stem_feature``; ``norm`` applies the final
        norm to the last stage's output (the only one it is sized for).
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        first = int(self.stem_feature)
        take_indices, max_index = feature_take_indices(len(self.stages) + first, indices)
        last = len(self.stages) - 1 + first
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1 - first]
        intermediates = []

        def take(x_inter: torch.Tensor) -> None:
            intermediates.append((x_inter.permute(0, 2, 3, 1) if output_fmt == 'NHWC' else x_inter).contiguous())

        x = self._stem(x)
        if first and 0 in take_indices:
            take(x)
        i = 0
        for i, stage in enumerate(stages, start=first):
            x = stage(x)
            if i in take_indices:
                take(self._final_on_intermediate(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if i == last:
            x = self._final(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages (and norm / head) that the given intermediates do not need; returns the kept indices."""
        first = int(self.stem_feature)
        take_indices, max_index = feature_take_indices(len(self.stages) + first, indices)
        prune_end = max_index + 1 - first < len(self.stages)
        self.stages = self.stages[:max_index + 1 - first]
        width_changed = (prune_norm or prune_end) and self._prune_final()
        if prune_end or width_changed:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end or width_changed:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._final(self.stages(self._stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
