"""InLine attention: injective linear attention swapped into the Swin, PVT, DeiT and CSWin skeletons.

Paper: `Bridging the Divide: Reconsidering Softmax and Linear Attention` (NeurIPS 2024) -
https://arxiv.org/abs/2412.06590. Official code and weights: https://github.com/LeapLabTHU/InLine (no license file
in the repository).

InLine attention is linear attention whose weights ``1/N + s/N q_i . (k_j - mean k)`` sum to one per query without a
normaliser (injective), plus a per-image dynamic depthwise 3x3 conv of the values (:mod:`backbones._agent_inline`,
:func:`ops.linear_attention` with ``normalizer='inline'``). The skeletons are written once (:mod:`backbones._swin`,
:mod:`backbones._pvt`, :mod:`backbones._deit`, :mod:`backbones._cswin`); this module registers the official
variants from the tables below. The official letter codes: ``I`` InLine attention over the whole stage map (CSwin:
its ``CSWIN_LA_SPLIT_SIZE`` is the map) or over all tokens (DeiT, every block), ``S`` Swin's shifted-window attention
(Swin) / PVT's spatial-reduction attention (PVT) / CSWin's LePE stripe attention (CSwin), ``M<n>``: a stage's first n
blocks ``I``, the rest ``S``.

The parameter counts are the official code's (``specs``): the README rounds some differently (InLine-Swin-T "30M" is
29.2M in the code; InLine-PVT-L "50.2M" is 51.2M) and lists others that the code does not build: InLine-CSwin-T / S /
B "25M / 43M / 96M" are 20.6M / 33.0M / 73.4M in the code. InLine-Swin-B-384 and InLine-CSwin-B-384 have configs but
no released weights. InLine has no position parameters in its attention: its models run at any size with the same
weights (PVT's and DeiT's position embeddings are resized); outputs equal the official models' at the build size.
The CSwin runs were trained with EMA (``main_ema.py``: files with ``model`` and ``state_dict_ema``); their EMA
weights load by default (``CHECKPOINT_EMA``).
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
CHECKPOINT_EMA = {'inline_cswin_tiny', 'inline_cswin_small', 'inline_cswin_base', 'inline_cswin_base_384'}

checkpoint_filter_fn = filter_by_class({s.cls: s.filter_fn for s in SKELETONS.values()})

# the official letters per skeleton (Swin: M mixes the first and the second kind)
LETTERS = dict(swin={'I': 'inline', 'S': 'window'}, pvt={'I': 'inline', 'S': 'sra'})

# The official cfgs/*.yaml over config.py's defaults (PVT_LA_SR_RATIOS 1111, CSWIN_LA_SPLIT_SIZE = the stage maps,
# DROP_PATH_RATE 0.1); drop_path_rate is the official training value. skeleton: which builder; the rest are that
# skeleton's arguments. InLine-DeiT-S / B are narrower than DeiT-S / B and run at 288 / 448.
_SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SWIN_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_PVT = dict(embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1),
            attn_type='IIII')
_DEIT = dict(skeleton='deit', patch_size=16, depth=12, attn_type='I', drop_path_rate=0.1)
_CSWIN = dict(skeleton='cswin', attn_type='IISS')
_CSWIN_B = dict(_CSWIN, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
model_cfgs: dict[str, dict[str, Any]] = dict(
    inline_swin_tiny=dict(skeleton='swin', **_SWIN_T, window_size=56, attn_type='IIIS', drop_path_rate=0.2),
    inline_swin_small=dict(skeleton='swin', **_SWIN_S, window_size=56, attn_type='IISS', drop_path_rate=0.3),
    inline_swin_base=dict(skeleton='swin', **_SWIN_B, window_size=56, attn_type='IIMS2', drop_path_rate=0.5),
    inline_swin_base_384=dict(skeleton='swin', **_SWIN_B, img_size=384, window_size=96, attn_type='IIMS2',
                              drop_path_rate=0.5),
    inline_pvt_tiny=dict(skeleton='pvt', **_PVT, depths=(2, 2, 2, 2), drop_path_rate=0.1),
    inline_pvt_small=dict(skeleton='pvt', **_PVT, depths=(3, 4, 6, 3), drop_path_rate=0.1),
    inline_pvt_medium=dict(skeleton='pvt', **_PVT, depths=(3, 4, 18, 3), drop_path_rate=0.3),
    inline_pvt_large=dict(skeleton='pvt', **_PVT, depths=(3, 8, 27, 3), drop_path_rate=0.3),
    inline_deit_tiny=dict(_DEIT, embed_dim=192, num_heads=6),
    inline_deit_small=dict(_DEIT, img_size=288, embed_dim=320, num_heads=10),
    inline_deit_base=dict(_DEIT, img_size=448, embed_dim=384, num_heads=12),
    inline_cswin_tiny=dict(_CSWIN, embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), drop_path_rate=0.2),
    inline_cswin_small=dict(_CSWIN, embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.4),
    inline_cswin_base=dict(_CSWIN_B, drop_path_rate=0.5),
    inline_cswin_base_384=dict(_CSWIN_B, img_size=384, split_size=(1, 2, 12, 12), drop_path_rate=0.7),
)

# variant: (TsinghuaCloud share id of the official weights or None, README params (M), GFLOPs) from README.md
_RELEASES = dict(
    inline_swin_tiny=('32810869fcc34410966b', 30, 4.5),
    inline_swin_small=('e9657fd247c04c7cb1a1', 50, 8.7),
    inline_swin_base=('bf23564bb64c420aafe1', 88, 15.4),
    inline_swin_base_384=(None, 88, None),
    inline_pvt_tiny=('90ac52b1555b401eb5e6', 12.0, 2.0),
    inline_pvt_small=('1ab953b2479d433080a3', 21.6, 3.9),
    inline_pvt_medium=('a72aec31e6084bc0a280', 37.6, 6.9),
    inline_pvt_large=('efd91318ba964f01b288', 50.2, 10.2),
    inline_deit_tiny=('1d6b8191ad6d4114b291', 6.5, 1.1),
    inline_deit_small=('2f3898b07e9247f3beb3', 16.7, 5.0),
    inline_deit_base=('10bdd726d4b0435eb34e', 23.8, 17.2),
    inline_cswin_tiny=('49fa2ecc543647c4b970', 25, 4.3),
    inline_cswin_small=('59f4e65f776f4052b93c', 43, 6.8),
    inline_cswin_base=('91e17121df284ae38521', 96, 14.9),
    inline_cswin_base_384=(None, None, None),
)

# evaluated without a center crop (the official TEST.CROP: False); the others (every DeiT / CSwin cfg too) crop 0.875
# (config.py's default)
_NO_CROP = {'inline_swin_base_384'}


def _cfg(variant: str) -> dict[str, Any]:
    size = model_cfgs[variant].get('img_size', 224)
    share = _RELEASES[variant][0]
    deit = model_cfgs[variant]['skeleton'] == 'deit'  # class-token classifier, token features
    return {
        # a cache file per model (the URL's basename is empty), read by load_pretrained (backbones.checkpoint)
        'url': release_url(f'https://cloud.tsinghua.edu.cn/f/{share}/?dl=1' if share else '', variant),
        'custom_load': bool(share), 'num_classes': 1000,
        'input_size': (3, size, size), 'pool_size': None if deit else (size // 32, size // 32),
        'crop_pct': 1.0 if variant in _NO_CROP else 0.875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head' if deit else 'head.fc', 'license': 'unknown',
        'origin_url': 'https://github.com/LeapLabTHU/InLine', 'paper_ids': 'arXiv:2412.06590',
        'paper_name': 'Bridging the Divide: Reconsidering Softmax and Linear Attention',
    }


default_cfgs = generate_default_cfgs({f'{v}.in1k': _cfg(v) for v in model_cfgs})


def _doc(variant: str) -> str:
    _, params, gflops = _RELEASES[variant]
    size = model_cfgs[variant].get('img_size', 224)
    if params is None:
        return f'{variant}: an official config at {size}, no README row or released weights.'
    return f'{variant}: README {params}M params' + (f', {gflops} GFLOPs' if gflops else '') + f' at {size}.'


register_variants(globals(), model_cfgs, LETTERS, {v: _doc(v) for v in model_cfgs})
