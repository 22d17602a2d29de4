"""One generic mmdet/mmseg backbone for every zoo (and timm) model, built on timm's ``features_only`` contract.

Nothing here knows a model family: stages come from ``feature_info``, weights from the zoo's one reader and fit
(``backbones.checkpoint``), parameter groups from the classification model's ``no_weight_decay``/``group_matcher``.
A new family works as soon as it is registered with timm and honours that contract.
"""
import difflib
import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d
from timm.models import reparameterize_model
from timm.models._features import FeatureGetterNet
from torch.nn.modules.batchnorm import _BatchNorm

import backbones  # noqa: F401  (registers the zoo's models with timm)
from backbones.checkpoint import fit, read_checkpoint

from .checkpoint import check_checkpoint_path, mmengine_safe_globals

_OUT_NORMS: dict[Any, type[nn.Module] | None] = {
    True: LayerNorm2d, 'ln': LayerNorm2d, 'bn': nn.BatchNorm2d, False: None}


class AttnZooBackbone(BaseModule):
    """Multi-scale feature backbone for mmdet/mmseg from any model registered with timm.

    Args:
        model_name: zoo or timm model name (``nat_tiny``, ``dinat_s_base``, ``resnet50``, ...).
        out_indices: stages whose outputs are returned (indices into the model's ``feature_info``); default: the
            model's last four feature levels (strides 4/8/16/32 for every zoo model; MaxViT's level 0 is its stem).
        drop_path_rate: stochastic depth rate passed to the model.
        frozen_stages: -1 trains everything; k >= 0 freezes the stem (everything before the first feature level)
            and the first k feature levels (mmdet's convention with ``feature_info`` levels as stages).
        norm_eval: keep BatchNorm layers in eval mode during training (running stats frozen).
        with_cp: gradient checkpointing through the model's ``set_grad_checkpointing``.
        out_norm: a norm over channels on each output, named ``norm{i}`` for stage i: True or ``'ln'`` a LayerNorm, as
            the official NAT/DiNAT detection and segmentation backbones do (their checkpoints then load as they are);
            ``'bn'`` a BatchNorm (Next-ViT's segmentation backbones); False none. One value for all outputs, or one
            per output (LITv2's official backbone normalises every level but the first).
        final_norm: take the outputs from the classification model's ``forward_intermediates(norm=True)`` (timm's
            FeatureGetterNet), so the model's own final norm, with its pretrained weights, normalises the levels
            the model applies it to (Next-ViT, ConvNeXt: the last one), as Next-ViT's segmentation backbones do.
        norm_cfg: None keeps the model's BatchNorms; ``dict(type='SyncBN')`` turns every BatchNorm of the backbone
            (output norms included) into SyncBatchNorm (Next-ViT's segmentation backbones); ``dict(type='BN')``
            keeps them (what the entry points make of SyncBN on a machine without CUDA).
        pad_multiple: inputs are zero-padded (bottom/right) to this multiple and features cropped back to
            ``ceil(size / stride)``; default: the largest stride among the outputs.
        model_kwargs: extra architecture arguments for ``timm.create_model`` (e.g. DiNAT's detection ``dilations``).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads a classification checkpoint (ours or the
            official one, in any format the family reads: MOAT's TF1 tarballs too) through the zoo's loader
            (``backbones.checkpoint``: the same weights as ``pretrained=True``, validate.py and train.py);
            anything that does not match the model raises. Other init_cfg types are passed to mmengine.
        use_ema: which weights of that checkpoint: True the EMA ones, False the raw ones, None the family's default
            (``backbones.checkpoint``, the same rule as validate.py and ``pretrained=True``).
    """

    def __init__(
            self,
            model_name: str,
            out_indices: Sequence[int] | None = None,
            drop_path_rate: float = 0.,
            frozen_stages: int = -1,
            norm_eval: bool = False,
            with_cp: bool = False,
            out_norm: bool | str | Sequence[bool | str] = True,
            final_norm: bool = False,
            norm_cfg: dict | None = None,
            pad_multiple: int | None = None,
            model_kwargs: dict[str, Any] | None = None,
            init_cfg: dict | None = None,
            use_ema: bool | None = None,
    ):
        # A 'Pretrained' init_cfg is ours to load (strictly, through the zoo's fit); mmengine keeps the rest.
        self.pretrained = None
        cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [] if init_cfg is None else [init_cfg]
        for cfg in cfgs:
            if cfg.get('type') == 'Pretrained':
                if 'checkpoint' not in cfg:
                    raise ValueError("init_cfg of type 'Pretrained' needs a 'checkpoint' (path or URL)")
                if cfg.get('prefix'):
                    raise ValueError("init_cfg 'prefix' is not supported: give a classification checkpoint")
                self.pretrained = cfg['checkpoint']
                check_checkpoint_path(self.pretrained, 'init_cfg checkpoint')
        others = [cfg for cfg in cfgs if cfg.get('type') != 'Pretrained']
        super().__init__(init_cfg=others or None)

        if not isinstance(model_name, str) or not timm.is_model(model_name):
            close = difflib.get_close_matches(str(model_name), timm.list_models(), n=5)
            hint = f' Did you mean one of {close}?' if close else ''
            raise ValueError(f'unknown model_name {model_name!r}: not registered with timm or the zoo.{hint}')
        self.model_name = model_name
        self.model_kwargs = dict(model_kwargs or {})
        self.drop_path_rate = drop_path_rate
        self.use_ema = use_ema
        if out_indices is None:
            num_levels = len(self.classification_model().feature_info)
            out_indices = tuple(range(max(0, num_levels - 4), num_levels))
        self.out_indices = tuple(out_indices)
        if not self.out_indices or not all(isinstance(i, int) for i in self.out_indices):
            raise ValueError(f'out_indices must be a non-empty sequence of ints, got {out_indices!r}')
        if len(set(self.out_indices)) != len(self.out_indices) or list(self.out_indices) != sorted(self.out_indices):
            raise ValueError(f'out_indices must be increasing and unique, got {out_indices!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        try:
            self.model = self._feature_model(final_norm)
        except (IndexError, AssertionError) as e:  # timm's feature wrappers index feature_info with out_indices
            raise ValueError(f'out_indices {self.out_indices} out of range for {model_name!r}: {e!r}') from e
        all_levels = self.model.feature_info.info
        self.num_levels = len(all_levels)
        if min(self.out_indices) < 0 or max(self.out_indices) >= self.num_levels:
            raise ValueError(
                f'out_indices {self.out_indices} out of range for {model_name!r}, which has {self.num_levels} '
                f'feature levels (valid: 0..{self.num_levels - 1})')
        if not -1 <= frozen_stages < self.num_levels:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_levels - 1}], got {frozen_stages}')
        self.channels = [all_levels[i]['num_chs'] for i in self.out_indices]
        self.strides = [all_levels[i]['reduction'] for i in self.out_indices]
        self.pad_multiple = pad_multiple or max(self.strides)
        self.channels_last = getattr(self.model, 'output_fmt', 'NCHW') == 'NHWC'  # timm's Format is a str enum

        norms = [out_norm] * len(self.out_indices) if isinstance(out_norm, (bool, str)) else list(out_norm)
        if len(norms) != len(self.out_indices) or not all(n in _OUT_NORMS for n in norms):
            raise ValueError(f'out_norm must be one of {sorted(map(str, _OUT_NORMS))} or one of them per output '
                             f'({len(self.out_indices)}), got {out_norm!r}')
        self.out_norm = {i: _OUT_NORMS[n] for i, n in zip(self.out_indices, norms)}
        for i, ch in zip(self.out_indices, self.channels):
            if self.out_norm[i]:
                # eps 1e-5: nn.LayerNorm's / nn.BatchNorm2d's default, which the official per-level norms use.
                self.add_module(f'norm{i}', self.out_norm[i](ch, eps=1e-5))
        self._sync_bn(norm_cfg)

        if with_cp:
            target = self.model if hasattr(self.model, 'set_grad_checkpointing') else getattr(self.model, 'model', None)
            if target is None or not hasattr(target, 'set_grad_checkpointing'):
                raise ValueError(f'with_cp=True but {model_name!r} does not support gradient checkpointing')
            target.set_grad_checkpointing(True)

        self._level_of_param = self._assign_levels()
        self._freeze_stages()
        self._register_load_state_dict_pre_hook(self._convert_foreign_layout, with_module=False)

    # ---------------------------------------------------------------- structure
    def _feature_model(self, final_norm: bool) -> nn.Module:
        kwargs = dict(pretrained=False, drop_path_rate=self.drop_path_rate, **self.model_kwargs)
        if not final_norm:
            return timm.create_model(self.model_name, features_only=True, out_indices=self.out_indices, **kwargs)
        model = timm.create_model(self.model_name, **kwargs)
        if not hasattr(model, 'forward_intermediates'):
            raise ValueError(f'final_norm=True needs forward_intermediates(norm=True), which {self.model_name!r} '
                             'does not have')
        pretrained_cfg = model.pretrained_cfg
        model = FeatureGetterNet(model, out_indices=self.out_indices, norm=True)
        model.pretrained_cfg = pretrained_cfg
        return model

    def _sync_bn(self, norm_cfg: dict | None) -> None:
        norm_type = (norm_cfg or {}).get('type', 'BN')
        if norm_type not in ('BN', 'SyncBN'):
            raise ValueError(f"norm_cfg type must be 'BN' (keep the model's BatchNorms) or 'SyncBN', got "
                             f'{norm_type!r}: the norms are the model\'s own')
        if norm_type == 'SyncBN':
            for name, child in list(self.named_children()):
                setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))

    def _level_module_names(self) -> list[str | None]:
        """Name (inside ``self.model``) of each feature level's module, None where pruned away."""
        modules = dict(self.model.named_modules())
        names = []
        for info in self.model.feature_info.info:
            name = info['module']
            # FeatureListNet flattens a top-level Sequential (stages.0 -> stages_0); FeatureGetterNet nests (model.).
            candidates = (name, name.replace('.', '_', 1), f'model.{name}')
            names.append(next((c for c in candidates if c in modules), None))
        return names

    def _assign_levels(self) -> dict[str, int]:
        """Map each parameter of ``self.model`` to its level: -1 for the stem, i for stage i.

        A parameter inside a level's module belongs to it; one between levels (e.g. a downsampling layer kept outside
        the stage module) belongs to the next level; one before the first level belongs to the stem.
        """
        prefixes = self._level_module_names()
        names = [n for n, _ in self.model.named_parameters()]
        levels: list[int | None] = []
        for n in names:
            levels.append(next((i for i, p in enumerate(prefixes) if p and n.startswith(p + '.')), None))
        if all(lv is None for lv in levels):
            return {n: -1 for n in names}
        first = next(i for i, lv in enumerate(levels) if lv is not None)
        nxt = self.num_levels
        for i in range(len(names) - 1, -1, -1):
            if levels[i] is None:
                levels[i] = -1 if i < first else nxt
            else:
                nxt = levels[i]
        return dict(zip(names, levels))

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for name, param in self.model.named_parameters():
            if self._level_of_param[name] < self.frozen_stages:
                param.requires_grad = False

    def _frozen_modules(self) -> list[nn.Module]:
        frozen = []
        for module in self.model.modules():
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                frozen.append(module)
        return frozen

    def train(self, mode: bool = True) -> 'AttnZooBackbone':
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
        return self

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.pad_multiple, (-width) % self.pad_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        try:
            features = self.model(x)
        except AssertionError as e:  # timm models assert on sizes they cannot take (e.g. window multiples)
            raise RuntimeError(
                f'{self.model_name!r} cannot take a {tuple(x.shape[-2:])} input ({e}); set the backbone\'s '
                f'pad_multiple to the size multiple it needs') from e
        if isinstance(features, dict):
            features = list(features.values())
        outs = []
        for level, stride, feat in zip(self.out_indices, self.strides, features):
            if self.channels_last:
                feat = feat.permute(0, 3, 1, 2)
            feat = feat[..., :math.ceil(height / stride), :math.ceil(width / stride)]
            if self.out_norm[level]:
                feat = getattr(self, f'norm{level}')(feat)
            outs.append(feat.contiguous())
        return tuple(outs)

    def reparameterize(self) -> 'AttnZooBackbone':
        """Fuse the model for inference, in place (eval mode): timm's ``reparameterize_model`` calls every
        submodule's ``fuse`` / ``reparameterize`` / ``switch_to_deploy`` (Next-ViT merges its pre-norm BatchNorms
        into the following linear layers, the official ``merge_bn``). Call it after loading the weights: the state
        dict changes. Raises ``ValueError`` when the model has nothing to fuse."""
        hooks = ('fuse', 'reparameterize', 'switch_to_deploy')
        if not any(hasattr(m, h) for m in self.model.modules() for h in hooks):
            raise ValueError(f'{self.model_name!r} has nothing to reparameterize (no module with {"/".join(hooks)})')
        self.eval()
        with torch.no_grad():
            reparameterize_model(self.model, inplace=True)
        return self

    # ---------------------------------------------------------------- weights
    def classification_model(self) -> nn.Module:
        """The classification model of the same architecture on the meta device (no memory, built once), for names,
        shapes, feature levels, filters and parameter groups."""
        model = self.__dict__.get('_classification_model')  # kept out of the module tree (not a submodule)
        if model is None:
            with torch.device('meta'):
                model = timm.create_model(self.model_name, pretrained=False, **self.model_kwargs)
            self.__dict__['_classification_model'] = model
        return model

    def _feature_name_map(self, cls_names: Sequence[str]) -> dict[str, str]:
        """Classification-model state-dict name -> name inside ``self.model`` (absent when pruned by features_only)."""
        own = set(self.model.state_dict().keys())
        mapping = {}
        for name in cls_names:
            for candidate in (name, name.replace('.', '_', 1), f'model.{name}'):
                if candidate in own:
                    mapping[name] = candidate
                    break
        return mapping

    def convert_classification_state_dict(
            self,
            checkpoint: Mapping[str, Any],
            source: str = 'checkpoint',
            use_ema: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Classification-layout weights (official or ours, possibly wrapped) -> a complete state dict for
        ``self.model``, through :func:`backbones.checkpoint.fit` (``use_ema``: by default the family's choice).

        Every weight the feature model needs must be there with the right shape and no key may be left that the
        classification model does not have; the weights the feature model does not use (the classifier, a final
        norm, absent from detection checkpoints) may be missing. Raises ``ValueError`` naming ``source``.
        """
        cls_model = self.classification_model()
        expected = cls_model.state_dict()
        mapping = self._feature_name_map(list(expected.keys()))
        try:
            state_dict = fit(checkpoint, cls_model, use_ema, optional=set(expected) - set(mapping))
        except ValueError as e:
            raise ValueError(f'{source}: {e}') from None
        unmapped = set(self.model.state_dict()) - set(mapping.values())
        if unmapped:
            raise RuntimeError(f'cannot map feature-model keys {sorted(unmapped)[:8]} onto {self.model_name!r}')
        return {mapping[k]: v for k, v in state_dict.items() if k in mapping}

    def init_weights(self) -> None:
        """Load ``init_cfg``'s classification checkpoint strictly (minus the classifier), else defer to mmengine."""
        if self.pretrained is None:
            super().init_weights()
            return
        with mmengine_safe_globals():  # a checkpoint written by mmengine holds its own types
            checkpoint = read_checkpoint(self.pretrained, self.model_name)
        converted = self.convert_classification_state_dict(checkpoint, f'checkpoint {self.pretrained}', self.use_ema)
        self.model.load_state_dict(converted, strict=True)
        self._is_init = True

    def _convert_foreign_layout(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load-time hook: rewrite backbone weights stored in the official (classification-style) layout.

        Official detection/segmentation checkpoints hold the backbone as ``backbone.<official names>`` plus
        ``backbone.norm{i}``; the per-level norms already share our names, the rest goes through the zoo's fit.
        Runs for every ``load_state_dict`` (runner ``load_from``, ``downstream.test``, resume); a no-op when the keys
        are already ours.
        """
        own = set(self.state_dict().keys())
        foreign = {k[len(prefix):]: k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in own}
        if not foreign:
            return
        converted = self.convert_classification_state_dict(
            {name: state_dict[key] for name, key in foreign.items()}, source='backbone weights in the checkpoint')
        for key in foreign.values():
            del state_dict[key]
        for name, value in converted.items():
            state_dict[f'{prefix}model.{name}'] = value

    # ---------------------------------------------------------------- optimizer support
    def param_group_info(self, layer_decay: bool = False) -> dict[str, tuple[bool, int]]:
        """Per parameter (names relative to this module): (no weight decay?, layers below the top layer).

        No weight decay for what the classification model lists in ``no_weight_decay()`` (rel-pos tables, position
        embeddings, ...). With ``layer_decay`` the layers come from the model's ``group_matcher`` as in timm's
        layer-decay groups (BEiT's rule: lr scale = rate ** layers_below_top); the per-level output norms count as
        the top layer, like the heads.
        """
        cls_model = self.classification_model()
        patterns = set(cls_model.no_weight_decay()) if hasattr(cls_model, 'no_weight_decay') else set()
        layer_of: dict[str, int] = {}
        num_layers = 1
        if layer_decay:
            from timm.models import group_parameters
            from timm.optim._param_groups import auto_group_layers

            if hasattr(cls_model, 'group_matcher'):
                layer_of = group_parameters(cls_model, cls_model.group_matcher(coarse=False), reverse=True)
            else:
                layer_of = auto_group_layers(cls_model)
            num_layers = max(layer_of.values()) + 1
        mapping = self._feature_name_map([n for n, _ in cls_model.named_parameters()])
        info = {}
        for cls_name, feat_name in mapping.items():
            no_decay = any(
                cls_name == p or cls_name.endswith('.' + p) or fnmatch.fnmatch(cls_name, p) for p in patterns)
            info[f'model.{feat_name}'] = (no_decay, num_layers - 1 - layer_of.get(cls_name, num_layers - 1))
        for name, _ in self.named_parameters():
            info.setdefault(name, (False, 0))
        return info
