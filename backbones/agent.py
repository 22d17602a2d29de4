"""Agent Attention: agent attention swapped into the Swin and PVT skeletons (DeiT / CSwin: see their tables).

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` (ECCV 2024) -
https://arxiv.org/abs/2312.08874. Official code and weights: https://github.com/LeapLabTHU/Agent-Attention
(``agent_transformer/``; no license file in the repository).

Agent tokens (the queries average-pooled to a small grid) first attend to the keys, then every query attends to the
agents (:func:`ops.agent_attention`, two dense cross-attentions), with agent position biases and a depthwise 3x3
conv of the values (:mod:`backbones._agent_inline`). The skeletons are written once (:mod:`backbones._swin`,
:mod:`backbones._pvt`); this module registers the official variants from the tables below. The official letter
codes: ``A`` agent attention over the whole stage map, ``B`` Swin's shifted-window attention (Swin) / PVT's
spatial-reduction attention (PVT), ``M<n>``: a stage's first n blocks ``A``, the rest ``B``.

The official models accept only the input size they were built for (their biases and position embeddings are sized
to it; Agent-Attention issues #7, #16, #38); these run at any size, resizing the biases on the fly as the official
detection / segmentation backbones do, with outputs equal to the official models' at the build size. The official
downstream configs also change the agent grids (file-name suffixes ``9-12-14-7`` / ``12-16-28-28``): pass
``agent_shapes`` (e.g. ``((9, 9), (12, 12), (14, 14), (7, 7))``).
"""
from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs

from ._family import SKELETONS, register_variants
from .checkpoint import filter_by_class

__all__ = ['CHECKPOINT_EMA', 'LETTERS', 'checkpoint_filter_fn', 'model_cfgs']

# Variants whose default weights are the EMA ones when a file holds both; the Swin / PVT releases hold only `model`.
CHECKPOINT_EMA: set[str] = set()

checkpoint_filter_fn = filter_by_class({s.cls: s.filter_fn for s in SKELETONS.values()})

# the official letters per skeleton (Swin: M mixes the first and the second kind)
LETTERS = dict(swin={'A': 'agent', 'B': 'window'}, pvt={'A': 'agent', 'B': 'sra'})

# The official cfgs/*.yaml over config.py's defaults (AGENT.NUM 9-16-49-49, PVT_LA_SR_RATIOS 1111); drop_path_rate
# is the official training value. skeleton: which builder; the rest are that skeleton's arguments.
_SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SWIN_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_PVT = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1),
            attn_type='AAAA')
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
)

# evaluated without a center crop (the official TEST.CROP: False); the others crop 0.875 (config.py's default)
_NO_CROP = {'agent_swin_small_288', 'agent_swin_base_384'}


def _cfg(variant: str) -> dict[str, Any]:
    size = model_cfgs[variant].get('img_size', 224)
    return {
        'url': f'https://cloud.tsinghua.edu.cn/f/{_RELEASES[variant][0]}/?dl=1', 'num_classes': 1000,
        'input_size': (3, size, size), 'pool_size': (size // 32, size // 32),
        'crop_pct': 1.0 if variant in _NO_CROP else 0.875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head.fc', 'license': 'unknown',
        'origin_url': 'https://github.com/LeapLabTHU/Agent-Attention', 'paper_ids': 'arXiv:2312.08874',
        'paper_name': 'Agent Attention: On the Integration of Softmax and Linear Attention',
    }


default_cfgs = generate_default_cfgs({f'{v}.in1k': _cfg(v) for v in model_cfgs})


register_variants(globals(), model_cfgs, LETTERS, {
    v: f'{v}: {params}M params, {gflops} GFLOPs at {model_cfgs[v].get("img_size", 224)} (official README).'
    for v, (_, params, gflops) in _RELEASES.items()})
