"""Agent Attention: agent attention swapped into the Swin, PVT, DeiT and CSWin skeletons.

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` (ECCV 2024) -
https://arxiv.org/abs/2312.08874. Official code and weights: https://github.com/LeapLabTHU/Agent-Attention
(``agent_transformer/``; no license file in the repository).

Agent tokens (the queries average-pooled to a small grid) first attend to the keys, then every query attends to the
agents (:func:`ops.agent_attention`, two dense cross-attentions), with agent position biases and a depthwise 3x3
conv of the values (:mod:`backbones._agent_inline`). The skeletons are written once (:mod:`backbones._swin`,
:mod:`backbones._pvt`, :mod:`backbones._deit`, :mod:`backbones._cswin`); this module registers the official
variants from the tables below. The official letter codes: ``A`` agent attention over the whole stage map (Swin,
PVT, CSwin: its ``CSWIN_LA_SPLIT_SIZE`` is the map) or over the patch grid with the class-token biases (DeiT), ``B``
Swin's shifted-window attention (Swin) / PVT's spatial-reduction attention (PVT) / softmax attention (DeiT) /
CSWin's LePE stripe attention (CSwin), ``M<n>``: a stage's first n blocks ``A``, the rest ``B``. DeiT has one letter
per block (Agent-DeiT-B: agents in the first 4 blocks, the official ``agent_layer=4``).

The official models accept only the input size they were built for (their biases and position embeddings are sized
to it; Agent-Attention issues #7, #16, #38); these run at any size, resizing the biases on the fly as the official
detection / segmentation backbones do (DeiT's position embeddings as timm's ``resample_abs_pos_embed``), with outputs
equal to the official models' at the build size. The official downstream configs also change the agent grids
(file-name suffixes ``9-12-14-7`` / ``12-16-28-28``): pass ``agent_shapes`` (e.g.
``((9, 9), (12, 12), (14, 14), (7, 7))``). The CSwin runs were trained with EMA (``main_ema.py``: files with
``model`` and ``state_dict_ema``); their EMA weights load by default (``CHECKPOINT_EMA``).
"""
from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs

from ._family import SKELETONS, register_variants
from .checkpoint import filter_by_class, release_url

__all__ = ['CHECKPOINT_EMA', 'LETTERS', 'checkpoint_filter_fn', 'model_cfgs']

# Variants whose default weights are the EMA ones when a file holds both: the CSwin runs (main_ema.py); the Swin /
# PVT / DeiT releases hold only `model`.
CHECKPOINT_EMA = {'agent_cswin_tiny', 'agent_cswin_small', 'agent_cswin_base', 'agent_cswin_base_384'}

checkpoint_filter_fn = filter_by_class({s.cls: s.filter_fn for s in SKELETONS.values()})

# the official letters per skeleton (Swin: M mixes the first and the second kind)
LETTERS = dict(swin={'A': 'agent', 'B': 'window'}, pvt={'A': 'agent', 'B': 'sra'})

# The official cfgs/*.yaml over config.py's defaults (AGENT.NUM 9-16-49-49, PVT_LA_SR_RATIOS 1111,
# CSWIN_LA_SPLIT_SIZE = the stage maps, DROP_PATH_RATE 0.1); drop_path_rate is the official training value.
# skeleton: which builder; the rest are that skeleton's arguments.
_SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SWIN_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_PVT = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1),
            attn_type='AAAA')
_DEIT = dict(skeleton='deit', patch_size=16, depth=12, attn_type='A')
_DEIT_S = dict(_DEIT, embed_dim=384, num_heads=6, attn_kwargs={'A': {'agent_num': 49}}, drop_path_rate=0.1)
_CSWIN = dict(skeleton='cswin', attn_type='AABB', branch_kwargs={'A': {'agent_num': (9, 16, 49, 49)}})
_CSWIN_B = dict(_CSWIN, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
model_cfgs: dict[str, dict[str, Any]] = dict(
    agent_swin_tiny=dict(skeleton='swin', **_SWIN_T, window_size=56, attn_type='AAAB', drop_path_rate=0.2),
    agent_swin_small=dict(skeleton='swin', **_SWIN_S, window_size=56, attn_type='AABB', drop_path_rate=0.3),
    agent_swin_small_288=dict(skeleton='swin', **_SWIN_S, img_size=288, window_size=72, attn_type='AABB',
                              drop_path_rate=0.3),
    agent_swin_base=dict(skeleton='swin', **_SWIN_B, window_size=56, attn_type='AAMB2', drop_path_rate=0.5),
    agent_swin_base_384=dict(skeleton='swin', **_SWIN_B, img_size=384, window_size=96, attn_type='AAMB2',
                             drop_path_rate=0.5),
    agent_pvt_tiny=dict(skeleton='pvt', **_PVT, depths=(2, 2, 2, 2), drop_path_rate=0.1),
    agent_pvt_small=dict(skeleton='pvt', **_PVT, depths=(3, 4, 6, 3), drop_path_rate=0.1),
    agent_pvt_medium=dict(skeleton='pvt', **_PVT, depths=(3, 4, 18, 3), drop_path_rate=0.3),
    agent_pvt_medium_256=dict(skeleton='pvt', **_PVT, depths=(3, 4, 18, 3), img_size=256, drop_path_rate=0.3),
    agent_pvt_large=dict(skeleton='pvt', **_PVT, depths=(3, 8, 27, 3), drop_path_rate=0.3),
    agent_deit_tiny=dict(_DEIT, embed_dim=192, num_heads=3, attn_kwargs={'A': {'agent_num': 49}}, drop_path_rate=0.),
    agent_deit_small=_DEIT_S,
    agent_deit_small_448=dict(_DEIT_S, img_size=448),
    agent_deit_base=dict(_DEIT, embed_dim=768, num_heads=12, attn_type='A' * 4 + 'B' * 8,
                         attn_kwargs={'A': {'agent_num': 81}}, drop_path_rate=0.3),
    agent_cswin_tiny=dict(_CSWIN, embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), drop_path_rate=0.2),
    agent_cswin_small=dict(_CSWIN, embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.4),
    agent_cswin_base=dict(_CSWIN_B, drop_path_rate=0.5),
    agent_cswin_base_384=dict(_CSWIN_B, img_size=384, split_size=(1, 2, 12, 12), drop_path_rate=0.7),
)

# variant: (TsinghuaCloud share id of the official weights, params (M), GFLOPs) from agent_transformer/README.md
_RELEASES = dict(
    agent_swin_tiny=('a2ddc1190c224f768a41', 29, 4.5),
    agent_swin_small=('f607172c9fea4d6e99bb', 50, 8.7),
    agent_swin_small_288=('09760394e93b4046a25e', 50, 14.6),
    agent_swin_base=('4fcd2d0114bb490483c3', 88, 15.4),
    agent_swin_base_384=('bb84ee9058954706a557', 88, 46.3),
    agent_pvt_tiny=('13fdf0e0a7c5498c934f', 11.6, 2.0),
    agent_pvt_small=('36b8be9a8863456685a3', 20.6, 4.0),
    agent_pvt_medium=('4d00ecacf18b45f9b88c', 35.9, 7.0),
    agent_pvt_medium_256=('654df734121643b19c52', 36.1, 9.2),
    agent_pvt_large=('040cfe0cfbbe4762ad09', 48.7, 10.4),
    agent_deit_tiny=('57e0904221824ee7b7af', 6.0, 1.2),
    agent_deit_small=('fdd43304372541db8ea7', 22.7, 4.4),
    agent_deit_small_448=('a228f86241c445f1969b', 23.1, 17.7),
    agent_deit_base=('5115f15fdd7e4ab58fbc', 87.2, 17.6),
    agent_cswin_tiny=('8c562a74441e46d5902b', 21, 4.3),
    agent_cswin_small=('30eb8af675bc4b7a8747', 33, 6.8),
    agent_cswin_base=('c8035b0839b2410c8c9f', 73, 14.9),
    agent_cswin_base_384=('1239be0df44b47719432', 73, 46.3),
)

# evaluated without a center crop (the official TEST.CROP: False); the others (every DeiT / CSwin cfg too) crop 0.875
# (config.py's default)
_NO_CROP = {'agent_swin_small_288', 'agent_swin_base_384'}


def _cfg(variant: str) -> dict[str, Any]:
    size = model_cfgs[variant].get('img_size', 224)
    deit = model_cfgs[variant]['skeleton'] == 'deit'  # class-token classifier, token features
    return {
        # a cache file per model (the URL's basename is empty), read by load_pretrained (backbones.checkpoint)
        'url': release_url(f'https://cloud.tsinghua.edu.cn/f/{_RELEASES[variant][0]}/?dl=1', variant),
        'custom_load': True, 'num_classes': 1000,
        'input_size': (3, size, size), 'pool_size': None if deit else (size // 32, size // 32),
        'crop_pct': 1.0 if variant in _NO_CROP else 0.875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head' if deit else 'head.fc', 'license': 'unknown',
        'origin_url': 'https://github.com/LeapLabTHU/Agent-Attention', 'paper_ids': 'arXiv:2312.08874',
        'paper_name': 'Agent Attention: On the Integration of Softmax and Linear Attention',
    }


default_cfgs = generate_default_cfgs({f'{v}.in1k': _cfg(v) for v in model_cfgs})


register_variants(globals(), model_cfgs, LETTERS, {
    v: f'{v}: {params}M params, {gflops} GFLOPs at {model_cfgs[v].get("img_size", 224)} (official README).'
    for v, (_, params, gflops) in _RELEASES.items()})
