"""The family contract: a model family is declared once, as a :class:`Family` record, and :func:`register` makes it.

A family module defines its model class (a :class:`~backbones._hierarchical.HierarchicalModel`, whose
``checkpoint_layout`` says how official checkpoints are named) and ends with ``register(Family(...))``:

* ``variants``: one :class:`Variant` row per published model: its docstring, its model arguments and its releases
  (tag -> what that release's pretrained cfg changes; the first tag is the default);
* ``cfg``: what every release of the family shares, over the zoo's defaults (:data:`ZOO_CFG`; ``pool_size`` is
  the input size / 32 and ``custom_load`` is set where a release has a ``url``, unless a release says otherwise);
* ``ema``: which weights a checkpoint holding raw and EMA ones gives by default (True / False, or the set of variants
  whose default is EMA), checked at registration;
* ``read_weights``: the family's own reader of weight files that are not torch checkpoints (MOAT's TF1 releases);
* ``letters``: for families on the shared skeletons (Agent, InLine), what the letters of their official attention
  codes mean, per skeleton (:mod:`backbones._attn_kinds`): a variant's ``attn_type`` code becomes the skeleton's
  ``attn_kinds``.

:func:`register` writes the module's ``default_cfgs`` and one timm entrypoint per variant into the module, so timm
finds them as it finds its own (``timm.list_models(module=...)``, ``create_model``, ``get_pretrained_cfg``,
``features_only``), refuses a name timm already has, and files the record in :data:`FAMILIES`, where the loaders
find it (:func:`family_of`).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, model_entrypoint, register_model

from ._attn_kinds import Letters, check_letters, parse_attn_code

__all__ = ['FAMILIES', 'Family', 'Variant', 'ZOO_CFG', 'family_of', 'register', 'release_url']

# What a release's pretrained cfg is unless its family or the release says otherwise.
ZOO_CFG: dict[str, Any] = dict(
    num_classes=1000, input_size=(3, 224, 224), crop_pct=0.875, interpolation='bicubic', fixed_input_size=False,
    mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, classifier='head.fc')


@dataclass(frozen=True)
class Variant:
    """One published model: the entrypoint's docstring, the model arguments, and per release tag (the first is the
    default) what its pretrained cfg changes from the family's."""

    doc: str
    args: Mapping[str, Any]
    releases: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {'in1k': {}})


@dataclass(frozen=True)
class Family:
    """A model family as the zoo knows it (see the module docstring).

    ``model`` is the model class, or for families built on shared skeletons (Agent, InLine) a mapping skeleton name
    -> class, each variant naming its ``skeleton``. ``module`` is the family module's ``__name__`` (timm reads its
    ``default_cfgs`` and lists the models under its last name). ``cache_per_model``: the release URLs do not name
    their files (TsinghuaCloud shares end in ``/``, every OneDrive share in ``content``), so each release is cached
    under a name of its own (:func:`release_url`).
    """

    name: str
    module: str
    model: type | Mapping[str, type]
    variants: Mapping[str, Variant]
    cfg: Mapping[str, Any]
    ema: bool | frozenset[str] = True
    read_weights: Callable[[str], dict[str, Any]] | None = None
    letters: Mapping[str, Letters] | None = None
    cache_per_model: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.ema, bool):
            if not isinstance(self.ema, frozenset):
                raise TypeError(f'{self.name}: ema must be a bool or a frozenset of variant names, got {self.ema!r}')
            unknown = sorted(self.ema - set(self.variants))
            if unknown:
                raise ValueError(f'{self.name}: ema names variants the family does not have: {unknown}')
        skeletons = isinstance(self.model, Mapping)
        for variant, row in self.variants.items():
            if not row.releases:
                raise ValueError(f'{self.name}: {variant} needs at least one release tag')
            if skeletons and row.args.get('skeleton') not in self.model:
                raise ValueError(f'{self.name}: {variant} must name its skeleton, one of {sorted(self.model)}')
        for skeleton, letters in (self.letters or {}).items():
            if not skeletons or skeleton not in self.model:
                raise ValueError(f'{self.name}: letters are per skeleton of the family, got {skeleton!r}')
            check_letters(letters, self.model[skeleton].KINDS, f'{self.name} letters of {skeleton}')

    def ema_first(self, variant: str) -> bool:
        """Whether ``variant``'s default weights are the EMA ones when a checkpoint holds both."""
        return self.ema if isinstance(self.ema, bool) else variant in self.ema

    def pretrained_cfg(self, variant: str, tag: str) -> dict[str, Any]:
        """The pretrained cfg of ``variant.tag``: :data:`ZOO_CFG` (the input size the variant's ``img_size``, if it
        has one), the family's ``cfg``, the release's changes."""
        row = self.variants[variant]
        size = row.args.get('img_size', 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        cfg = {**ZOO_CFG, 'input_size': (3, *size), **self.cfg, **row.releases[tag]}
        cfg.setdefault('pool_size', (cfg['input_size'][1] // 32, cfg['input_size'][2] // 32))
        url = cfg.get('url', '')
        cfg.setdefault('custom_load', bool(url))  # backbones.checkpoint reads the file (PretrainedMixin)
        if self.cache_per_model:
            cfg['url'] = release_url(url, variant)
        return cfg

    def model_class(self, args: dict[str, Any]) -> type:
        """The class ``args`` build (popping a skeleton family's ``skeleton``)."""
        return self.model[args.pop('skeleton')] if isinstance(self.model, Mapping) else self.model

    def create(self, variant: str, pretrained: bool = False, **kwargs: Any):
        """Build ``variant`` through timm (``kwargs`` override the table's arguments)."""
        from .checkpoint import pretrained_filter  # the loader reads the registry below: imported when first needed

        overlay = kwargs.get('pretrained_cfg_overlay') or {}
        if any(overlay.get(k) for k in ('file', 'url')) and 'custom_load' not in overlay:
            # timm reads such a file itself (EMA weights first, no family reader): the zoo's loader reads it instead,
            # as it reads the releases (PretrainedMixin), so a file gives the same weights everywhere
            kwargs['pretrained_cfg_overlay'] = dict(overlay, custom_load=True)
        if 'attn_kinds' in kwargs and 'attn_type' in kwargs:
            raise TypeError(f'{variant}: give attn_type (a letter code) or attn_kinds (words), not both')
        args = dict(self.variants[variant].args, **kwargs)
        skeleton = args.get('skeleton')
        cls = self.model_class(args)
        code = args.pop('attn_type', None)
        if code is not None and 'attn_kinds' not in kwargs:
            if skeleton not in (self.letters or {}):
                raise TypeError(f'{variant}: attn_type needs the letters of the family; give attn_kinds')
            depths = args['depths'] if 'depths' in args else (args['depth'],)  # DeiT: one stage
            args['attn_kinds'] = parse_attn_code(code, depths, self.letters[skeleton])
        feature_cfg = {**cls.feature_cfg(args), **(args.pop('feature_cfg', None) or {})}  # caller's wins
        return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=pretrained_filter,
                                    feature_cfg=feature_cfg, **args)


FAMILIES: dict[str, Family] = {}
_VARIANTS: dict[str, Family] = {}


def family_of(model: Any) -> Family | None:
    """The family of a registered name, or of a model built by ``timm.create_model``; None for anything else."""
    name = model if isinstance(model, str) else (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    return _VARIANTS.get(name)


def _entrypoint(family: Family, variant: str) -> Callable:
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        return family.create(variant, pretrained, **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = family.module
    entrypoint.__doc__ = family.variants[variant].doc
    return entrypoint


def register(family: Family) -> Family:
    """Register ``family``: its pretrained cfgs as the module's ``default_cfgs`` and one timm entrypoint per variant,
    as the module's attribute of that name. Raises ``ValueError`` for a name timm (or another family) already has."""
    module = sys.modules[family.module]
    for variant in family.variants:
        if timm.is_model(variant) and model_entrypoint(variant).__module__ != family.module:
            raise ValueError(f'{family.name}: {variant!r} is already registered by '
                             f'{model_entrypoint(variant).__module__}; zoo names never shadow another model')
    cfgs = generate_default_cfgs({f'{variant}.{tag}': family.pretrained_cfg(variant, tag)
                                  for variant, row in family.variants.items() for tag in row.releases})
    module.__dict__.setdefault('default_cfgs', {}).update(cfgs)
    for variant in family.variants:
        setattr(module, variant, register_model(_entrypoint(family, variant)))
        _VARIANTS[variant] = family
    FAMILIES[family.name] = family
    return family


def release_url(url: str, variant: str, ext: str = '.pth') -> tuple[str, str] | str:
    """``(url, cache file name)`` for timm's downloader: ``attnzoo-<variant>-<basename or 'checkpoint'>``, ``ext``
    appended when the basename has no extension; unique per model where the URL's basename is empty (TsinghuaCloud
    ``/f/<id>/?dl=1``) or shared (OneDrive ``.../root/content``). An empty ``url`` (no release) stays empty."""
    if not url:
        return url
    base = os.path.basename(urlparse(url).path) or 'checkpoint'
    return url, f'attnzoo-{variant}-{base}{"" if os.path.splitext(base)[1] else ext}'

