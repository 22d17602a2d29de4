"""Agent Attention: agent attention swapped into the DeiT and CSWin skeletons.

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` (ECCV 2024) -
https://arxiv.org/abs/2312.08874. Official code and weights: https://github.com/LeapLabTHU/Agent-Attention
(``agent_transformer/``; no license file in the repository).

Agent tokens (the queries average-pooled to a small grid) first attend to the keys, then every query attends to the
agents (:func:`ops.agent_attention`), with agent position biases and a depthwise 3x3 conv of the values
(:mod:`backbones._agent_inline`). The skeletons are written once (:mod:`backbones._deit`, :mod:`backbones._cswin`);
this module registers the official variants from the tables below. Letters: DeiT one per block (``A`` agent
attention with the class-token biases, ``B`` softmax; Agent-DeiT-B has agents in its first 4 blocks only, the
official ``agent_layer=4``); CSWin one per stage (``AABB``: ``A`` agent attention over the whole stage map, the
official ``CSWIN_LA_SPLIT_SIZE`` = the map; ``B`` CSWin's LePE stripe attention).

The official models accept only the input size they were built for (biases and position embeddings are sized to
it; Agent-Attention issues #7, #16, #38); these run at any size (DeiT's position embeddings resampled, the agent
biases resized as the official detection / segmentation backbones do), with outputs equal to the official
models' at the build size. The CSWin runs were trained with EMA (``main_ema.py``): their files hold ``model`` and
``state_dict_ema``, and the EMA weights load by default (``CHECKPOINT_EMA``).
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
CHECKPOINT_EMA = {'agent_cswin_tiny', 'agent_cswin_small', 'agent_cswin_base', 'agent_cswin_base_384'}


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The official checkpoint of a variant of this family onto ``model`` (its skeleton's filter)."""
    if isinstance(model, _deit.DeiT):
        return _deit.checkpoint_filter_fn(state_dict, model)
    if isinstance(model, _cswin.CSWin):
        return _cswin.checkpoint_filter_fn(state_dict, model)
    raise TypeError(f'no Agent checkpoint filter for a {type(model).__name__}')


# The official cfgs/*.yaml over config.py's defaults (DROP_PATH_RATE 0.1, AGENT.NUM 9-16-49-49,
# CSWIN_LA_SPLIT_SIZE = the stage maps); drop_path_rate is the official training value.
_DEIT = dict(skeleton='deit', patch_size=16, depth=12, attn_type='A')
_CSWIN = dict(skeleton='cswin', attn_type='AABB', branch_kwargs={'A': {'agent_num': (9, 16, 49, 49)}})
_CSWIN_S = dict(_CSWIN, embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16))
_CSWIN_B = dict(_CSWIN, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
model_cfgs: dict[str, dict[str, Any]] = dict(
    agent_deit_tiny=dict(_DEIT, embed_dim=192, num_heads=3, attn_kwargs={'A': {'agent_num': 49}}, drop_path_rate=0.),
    agent_deit_small=dict(_DEIT, embed_dim=384, num_heads=6, attn_kwargs={'A': {'agent_num': 49}},
                          drop_path_rate=0.1),
    agent_deit_small_448=dict(_DEIT, img_size=448, embed_dim=384, num_heads=6, attn_kwargs={'A': {'agent_num': 49}},
                              drop_path_rate=0.1),
    agent_deit_base=dict(_DEIT, embed_dim=768, num_heads=12, attn_type='A' * 4 + 'B' * 8,
                         attn_kwargs={'A': {'agent_num': 81}}, drop_path_rate=0.3),
    agent_cswin_tiny=dict(_CSWIN, embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), drop_path_rate=0.2),
    agent_cswin_small=dict(_CSWIN_S, drop_path_rate=0.4),
    agent_cswin_base=dict(_CSWIN_B, drop_path_rate=0.5),
    agent_cswin_base_384=dict(_CSWIN_B, img_size=384, split_size=(1, 2, 12, 12), drop_path_rate=0.7),
)

# variant: (TsinghuaCloud share id of the official weights, params (M), GFLOPs) from agent_transformer/README.md
_RELEASES = dict(
    agent_deit_tiny=('57e0904221824ee7b7af', 6.0, 1.2),
    agent_deit_small=('fdd43304372541db8ea7', 22.7, 4.4),
    agent_deit_small_448=('a228f86241c445f1969b', 23.1, 17.7),
    agent_deit_base=('5115f15fdd7e4ab58fbc', 87.2, 17.6),
    agent_cswin_tiny=('8c562a74441e46d5902b', 21, 4.3),
    agent_cswin_small=('30eb8af675bc4b7a8747', 33, 6.8),
    agent_cswin_base=('c8035b0839b2410c8c9f', 73, 14.9),
    agent_cswin_base_384=('1239be0df44b47719432', 73, 46.3),
)

_CREATE = {'deit': _deit.create_deit, 'cswin': _cswin.create_cswin}


def _cfg(variant: str) -> dict[str, Any]:
    cfg = model_cfgs[variant]
    size = cfg.get('img_size', 224)
    deit = cfg['skeleton'] == 'deit'
    return {
        'url': f'https://cloud.tsinghua.edu.cn/f/{_RELEASES[variant][0]}/?dl=1', 'num_classes': 1000,
        'input_size': (3, size, size), 'pool_size': None if deit else (size // 32, size // 32),
        # the official TEST.CROP (True in every DeiT / CSWin cfg): resize to 256/224 of the size, centre crop
        'crop_pct': 0.875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head' if deit else 'head.fc', 'license': 'unknown',
        'origin_url': 'https://github.com/LeapLabTHU/Agent-Attention', 'paper_ids': 'arXiv:2312.08874',
        'paper_name': 'Agent Attention: On the Integration of Softmax and Linear Attention',
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
    entrypoint.__doc__ = f'{variant}: {params}M params, {gflops} GFLOPs (official README).'
    globals()[variant] = register_model(entrypoint)


for _variant in model_cfgs:
    _register(_variant)
