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
weights load by default.
"""
from __future__ import annotations

from ._family import Variant
from ._skeletons import DEIT_CFG, register_leaplab, tsinghua

__all__: list[str] = []  # the entrypoints (timm's register_model adds them)

# The official cfgs/*.yaml over config.py's defaults (PVT_LA_SR_RATIOS 1111, CSWIN_LA_SPLIT_SIZE = the stage maps,
# DROP_PATH_RATE 0.1); drop_path_rate is the official training value. skeleton: which builder; the rest are that
# skeleton's arguments. InLine-DeiT-S / B are narrower than DeiT-S / B and run at 288 / 448. Docstrings: the official
# README's params / GFLOPs.
_SWIN_S = dict(skeleton='swin', embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(skeleton='swin', embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type='IIMS2',
               drop_path_rate=0.5)
_PVT = dict(skeleton='pvt', embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4),
            sr_ratios=(8, 4, 2, 1), attn_type='IIII')
_DEIT = dict(skeleton='deit', patch_size=16, depth=12, attn_type='I', drop_path_rate=0.1)
_CSWIN = dict(skeleton='cswin', attn_type='IISS')
_CSWIN_B = dict(_CSWIN, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))

register_leaplab(
    'inline', __name__, 'InLine', 'arXiv:2412.06590',
    'Bridging the Divide: Reconsidering Softmax and Linear Attention',
    # what the letters of the official ATTN_TYPE codes mean per skeleton (M<n>: a stage's first n blocks InLine, as
    # the official Swin / CSWin code; DeiT has no code: every block is InLine)
    letters=dict(swin=dict(I='inline', S='window', M=('inline', 'window')), pvt=dict(I='inline', S='sra'),
                 deit=dict(I='inline', S='softmax'), cswin=dict(I='inline', S='stripe', M=('inline', 'stripe'))),
    variants=dict(
        inline_swin_tiny=Variant('inline_swin_tiny: README 30M params, 4.5 GFLOPs at 224.',
                                 dict(skeleton='swin', embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                      window_size=56, attn_type='IIIS', drop_path_rate=0.2),
                                 tsinghua('32810869fcc34410966b')),
        inline_swin_small=Variant('inline_swin_small: README 50M params, 8.7 GFLOPs at 224.',
                                  dict(_SWIN_S, window_size=56, attn_type='IISS', drop_path_rate=0.3),
                                  tsinghua('e9657fd247c04c7cb1a1')),
        inline_swin_base=Variant('inline_swin_base: README 88M params, 15.4 GFLOPs at 224.',
                                 dict(_SWIN_B, window_size=56), tsinghua('bf23564bb64c420aafe1')),
        # evaluated without a center crop (the official TEST.CROP: False; the others crop 0.875, config.py's default)
        inline_swin_base_384=Variant('inline_swin_base_384: README 88M params at 384.',
                                     dict(_SWIN_B, img_size=384, window_size=96), tsinghua(None, crop_pct=1.0)),
        inline_pvt_tiny=Variant('inline_pvt_tiny: README 12.0M params, 2.0 GFLOPs at 224.',
                                dict(_PVT, depths=(2, 2, 2, 2), drop_path_rate=0.1), tsinghua('90ac52b1555b401eb5e6')),
        inline_pvt_small=Variant('inline_pvt_small: README 21.6M params, 3.9 GFLOPs at 224.',
                                 dict(_PVT, depths=(3, 4, 6, 3), drop_path_rate=0.1),
                                 tsinghua('1ab953b2479d433080a3')),
        inline_pvt_medium=Variant('inline_pvt_medium: README 37.6M params, 6.9 GFLOPs at 224.',
                                  dict(_PVT, depths=(3, 4, 18, 3), drop_path_rate=0.3),
                                  tsinghua('a72aec31e6084bc0a280')),
        inline_pvt_large=Variant('inline_pvt_large: README 50.2M params, 10.2 GFLOPs at 224.',
                                 dict(_PVT, depths=(3, 8, 27, 3), drop_path_rate=0.3),
                                 tsinghua('efd91318ba964f01b288')),
        inline_deit_tiny=Variant('inline_deit_tiny: README 6.5M params, 1.1 GFLOPs at 224.',
                                 dict(_DEIT, embed_dim=192, num_heads=6), tsinghua('1d6b8191ad6d4114b291', **DEIT_CFG)),
        inline_deit_small=Variant('inline_deit_small: README 16.7M params, 5.0 GFLOPs at 288.',
                                  dict(_DEIT, img_size=288, embed_dim=320, num_heads=10),
                                  tsinghua('2f3898b07e9247f3beb3', **DEIT_CFG)),
        inline_deit_base=Variant('inline_deit_base: README 23.8M params, 17.2 GFLOPs at 448.',
                                 dict(_DEIT, img_size=448, embed_dim=384, num_heads=12),
                                 tsinghua('10bdd726d4b0435eb34e', **DEIT_CFG)),
        inline_cswin_tiny=Variant('inline_cswin_tiny: README 25M params, 4.3 GFLOPs at 224.',
                                  dict(_CSWIN, embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16),
                                       drop_path_rate=0.2), tsinghua('49fa2ecc543647c4b970')),
        inline_cswin_small=Variant('inline_cswin_small: README 43M params, 6.8 GFLOPs at 224.',
                                   dict(_CSWIN, embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16),
                                        drop_path_rate=0.4), tsinghua('59f4e65f776f4052b93c')),
        inline_cswin_base=Variant('inline_cswin_base: README 96M params, 14.9 GFLOPs at 224.',
                                  dict(_CSWIN_B, drop_path_rate=0.5), tsinghua('91e17121df284ae38521')),
        inline_cswin_base_384=Variant('inline_cswin_base_384: an official config at 384, no README row or released '
                                      'weights.', dict(_CSWIN_B, img_size=384, split_size=(1, 2, 12, 12),
                                                       drop_path_rate=0.7), tsinghua(None)),
    ))
