"""InLine attention ("Bridging the Divide"): injective linear attention swapped into the DeiT and CSWin skeletons.

Paper: `Bridging the Divide: Reconsidering Softmax and Linear Attention` (NeurIPS 2024) -
https://arxiv.org/abs/2412.06590. Official code and weights: https://github.com/LeapLabTHU/InLine (no license file
in the repository).

Linear attention with phi = identity, ``(s/N) q (k^T v)`` plus the injective correction ``(1 - s q . mean k) mean v``
(:func:`ops.linear_attention`, ``normalizer='inline'``), plus a per-image 3x3 depthwise conv of v whose kernels are
made from the mean token (:mod:`backbones._agent_inline`). The skeletons are written once (:mod:`backbones._deit`,
:mod:`backbones._cswin`); this module registers the official variants from the tables below. Letters: DeiT ``I`` in
every block; CSWin one per stage (``IISS``: ``I`` InLine attention over the whole stage map, ``S`` CSWin's softmax
LePE stripe attention). No position parameters: the CSWin parameter counts do not depend on the build size.

Parameter counts are the official code's. InLine's README lists other numbers for some models (CSWin-T / S / B:
25M / 43M / 96M; the code builds 20.6M / 33.0M / 73.4M): the code is the truth. The official models assert their
build resolution; these run at any size (DeiT's position embeddings resampled). The CSWin runs were trained with
EMA (``main_ema.py``): their files hold ``model`` and ``state_dict_ema``, the EMA weights load by default.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from . import _cswin, _deit

__all__ = ['CHECKPOINT_EMA', 'checkpoint_filter_fn', 'model_cfgs']

# Variants whose default weights are the EMA ones when a file holds both (the CSWin runs, main_ema.py).
CHECKPOINT_EMA = {'inline_cswin_tiny', 'inline_cswin_small', 'inline_cswin_base', 'inline_cswin_base_384'}


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The official checkpoint of a variant of this family onto ``model`` (its skeleton's filter)."""
    if isinstance(model, _deit.DeiT):
        return _deit.checkpoint_filter_fn(state_dict, model)
    if isinstance(model, _cswin.CSWin):
        return _cswin.checkpoint_filter_fn(state_dict, model)
    raise TypeError(f'no InLine checkpoint filter for a {type(model).__name__}')


# The official cfgs/*.yaml over config.py's defaults (DROP_PATH_RATE 0.1, CSWIN_LA_SPLIT_SIZE = the stage maps);
# drop_path_rate is the official training value. InLine-DeiT-S/B are narrower than DeiT-S/B and run at 288 / 448.
_DEIT = dict(skeleton='deit', patch_size=16, depth=12, attn_type='I', drop_path_rate=0.1)
_CSWIN = dict(skeleton='cswin', attn_type='IISS')
_CSWIN_B = dict(_CSWIN, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
model_cfgs: dict[str, dict[str, Any]] = dict(
    inline_deit_tiny=dict(_DEIT, embed_dim=192, num_heads=6),
    inline_deit_small=dict(_DEIT, img_size=288, embed_dim=320, num_heads=10),
    inline_deit_base=dict(_DEIT, img_size=448, embed_dim=384, num_heads=12),
    inline_cswin_tiny=dict(_CSWIN, embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), drop_path_rate=0.2),
    inline_cswin_small=dict(_CSWIN, embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.4),
    inline_cswin_base=dict(_CSWIN_B, drop_path_rate=0.5),
    inline_cswin_base_384=dict(_CSWIN_B, img_size=384, split_size=(1, 2, 12, 12), drop_path_rate=0.7),
)

# variant: (TsinghuaCloud share id of the official weights or None, params (M), GFLOPs) from README.md, except the
# CSWin params: the code's (the README's differ, see the module docstring); inline_cswin_base_384 has a cfg but no
# release
_RELEASES = dict(
    inline_deit_tiny=('1d6b8191ad6d4114b291', 6.5, 1.1),
    inline_deit_small=('2f3898b07e9247f3beb3', 16.7, 5.0),
    inline_deit_base=('10bdd726d4b0435eb34e', 23.8, 17.2),
    inline_cswin_tiny=('49fa2ecc543647c4b970', 20.6, 4.3),
    inline_cswin_small=('59f4e65f776f4052b93c', 33.0, 6.8),
    inline_cswin_base=('91e17121df284ae38521', 73.4, 14.9),
    inline_cswin_base_384=(None, 73.4, None),
)

_CREATE = {'deit': _deit.create_deit, 'cswin': _cswin.create_cswin}


def _cfg(variant: str) -> dict[str, Any]:
    cfg = model_cfgs[variant]
    size = cfg.get('img_size', 224)
    deit = cfg['skeleton'] == 'deit'
    share = _RELEASES[variant][0]
    return {
        'url': f'https://cloud.tsinghua.edu.cn/f/{share}/?dl=1' if share else '', 'num_classes': 1000,
        'input_size': (3, size, size), 'pool_size': None if deit else (size // 32, size // 32),
        # the official TEST.CROP (True in every DeiT / CSWin cfg): resize to 256/224 of the size, centre crop
        'crop_pct': 0.875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head' if deit else 'head.fc', 'license': 'unknown',
        'origin_url': 'https://github.com/LeapLabTHU/InLine', 'paper_ids': 'arXiv:2412.06590',
        'paper_name': 'Bridging the Divide: Reconsidering Softmax and Linear Attention',
    }


default_cfgs = generate_default_cfgs({f'{v}.in1k': _cfg(v) for v in model_cfgs})


def _register(variant: str) -> None:
    cfg = dict(model_cfgs[variant])
    create = _CREATE[cfg.pop('skeleton')]

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        return create(variant, cfg, checkpoint_filter_fn, pretrained, **kwargs)
    _, params, gflops = _RELEASES[variant]
    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = __name__
    flops = f', {gflops} GFLOPs (official README)' if gflops else ' (no official release)'
    entrypoint.__doc__ = f'{variant}: {params}M params{flops}.'
    globals()[variant] = register_model(entrypoint)


for _variant in model_cfgs:
    _register(_variant)
