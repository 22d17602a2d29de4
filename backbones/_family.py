"""Building and registering the variants of a family made of shared skeletons (Agent, InLine), from data tables.

A family module keeps tables only: ``model_cfgs`` (variant -> skeleton name, official letter code ``attn_type``
and the skeleton's arguments), its letter meanings per skeleton, and per variant the release (weights URL, README
params / GFLOPs); :func:`register_variants` registers one timm entrypoint per variant in that module. A skeleton is
added to :data:`SKELETONS` once: its model class, official-checkpoint filter and letter-code parser.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from timm.models import build_model_with_cfg, register_model

from . import _cswin, _deit, _pvt, _swin

__all__ = ['Skeleton', 'SKELETONS', 'create', 'register_variants']


def _stage_features(args: dict[str, Any]) -> dict[str, Any]:
    """A hierarchical model's features: every stage by default."""
    return dict(flatten_sequential=True, out_indices=args.pop('out_indices', tuple(range(len(args['depths'])))))


def _token_features(args: dict[str, Any]) -> dict[str, Any]:
    """A token model's features as timm's ViT gives them: the last 3 blocks by default, through its getter."""
    return dict(out_indices=args.pop('out_indices', 3), feature_cls='getter')


@dataclass(frozen=True)
class Skeleton:
    cls: type
    filter_fn: Callable
    # (code, depths, letters) -> the model's ``attn_kinds`` argument; None: the model takes the official code as
    # its ``attn_type`` argument (DeiT, CSwin: letters A / I / B / S as the official ones)
    parse: Callable[[str, tuple, Mapping[str, str]], Any] | None = None
    # the model arguments -> timm's feature_cfg (pops ``out_indices``)
    features: Callable[[dict[str, Any]], dict[str, Any]] = _stage_features


def _parse_swin(code: str, depths: tuple, letters: Mapping[str, str]) -> list[list[str]]:
    return _swin.parse_attn_code(code, depths, letters, tuple(letters.values()))


SKELETONS: dict[str, Skeleton] = {
    'swin': Skeleton(_swin.Swin, _swin.checkpoint_filter_fn, _parse_swin),
    'pvt': Skeleton(_pvt.PVT, _pvt.checkpoint_filter_fn,
                    lambda code, depths, letters: _pvt.parse_attn_code(code, len(depths), letters)),
    'deit': Skeleton(_deit.DeiT, _deit.checkpoint_filter_fn, features=_token_features),
    'cswin': Skeleton(_cswin.CSWin, _cswin.checkpoint_filter_fn),
}


def create(variant: str, cfg: Mapping[str, Any], letters: Mapping[str, Mapping[str, str]], pretrained: bool = False,
           **kwargs: Any):
    """Build ``variant`` from its table entry ``cfg`` (kwargs override; ``attn_type`` too) through timm.

    ``letters[skeleton]`` maps the official letters to attention kinds, the mixing letter ``M``'s two kinds first
    and second (Swin); skeletons without a parser (DeiT, CSwin) take the code itself."""
    args = dict(cfg, **kwargs)
    skeleton = SKELETONS[args.pop('skeleton')]
    if skeleton.parse is not None:
        args['attn_kinds'] = skeleton.parse(args.pop('attn_type'), tuple(args['depths']), letters[cfg['skeleton']])
    feature_cfg = skeleton.features(args)
    return build_model_with_cfg(skeleton.cls, variant, pretrained, pretrained_filter_fn=skeleton.filter_fn,
                                feature_cfg=feature_cfg, **args)


def register_variants(namespace: dict[str, Any], model_cfgs: Mapping[str, Mapping[str, Any]],
                      letters: Mapping[str, Mapping[str, str]], docs: Mapping[str, str]) -> None:
    """One ``@register_model`` entrypoint per variant, defined in the family module whose globals are
    ``namespace`` (so timm finds its ``default_cfgs`` and the zoo its ``checkpoint_filter_fn``)."""
    def make(variant: str, cfg: Mapping[str, Any]) -> Callable:
        def entrypoint(pretrained: bool = False, **kwargs: Any):
            return create(variant, cfg, letters, pretrained, **kwargs)
        entrypoint.__name__ = entrypoint.__qualname__ = variant
        entrypoint.__module__ = namespace['__name__']
        entrypoint.__doc__ = docs[variant]
        return entrypoint

    for variant, cfg in model_cfgs.items():
        namespace[variant] = register_model(make(variant, cfg))
