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
``model`` and ``state_dict_ema``); their EMA weights load by default.
"""
from __future__ import annotations

from ._family import Variant
from ._skeletons import DEIT_CFG, register_leaplab, tsinghua

__all__: list[str] = []  # the entrypoints (timm's register_model adds them)

# The official cfgs/*.yaml over config.py's defaults (AGENT.NUM 9-16-49-49, PVT_LA_SR_RATIOS 1111,
# CSWIN_LA_SPLIT_SIZE = the stage maps, DROP_PATH_RATE 0.1); drop_path_rate is the official training value. skeleton:
# which builder; the rest are that skeleton's arguments. Docstrings: the official README's params / GFLOPs.
_SWIN_T = dict(skeleton='swin', embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=56)
_SWIN_S = dict(skeleton='swin', embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type='AABB',
               drop_path_rate=0.3)
_SWIN_B = dict(skeleton='swin', embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type='AAMB2',
               drop_path_rate=0.5)
_PVT = dict(skeleton='pvt', embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
            sr_ratios=(8, 4, 2, 1), attn_type='AAAA')
_DEIT = dict(skeleton='deit', patch_size=16, depth=12, attn_type='A')
_DEIT_S = dict(_DEIT, embed_dim=384, num_heads=6, attn_kwargs={'agent': {'agent_num': 49}}, drop_path_rate=0.1)
_CSWIN = dict(skeleton='cswin', attn_type='AABB', attn_kwargs={'agent': {'agent_num': (9, 16, 49, 49)}})
_CSWIN_B = dict(_CSWIN, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
_NO_CROP = dict(crop_pct=1.0)  # evaluated without a center crop (the official TEST.CROP: False; default crop 0.875)

register_leaplab(
    'agent', __name__, 'Agent-Attention', 'arXiv:2312.08874',
    'Agent Attention: On the Integration of Softmax and Linear Attention',
    # what the letters of the official ATTN_TYPE codes mean per skeleton (M<n>: a stage's first n blocks agents, as
    # the official Swin / CSWin code; DeiT has no code: agent_layer=n is n A blocks, then B)
    letters=dict(swin=dict(A='agent', B='window', M=('agent', 'window')), pvt=dict(A='agent', B='sra'),
                 deit=dict(A='agent', B='softmax'), cswin=dict(A='agent', B='stripe', M=('agent', 'stripe'))),
    variants=dict(
        agent_swin_tiny=Variant('agent_swin_tiny: 29M params, 4.5 GFLOPs at 224 (official README).',
                                dict(_SWIN_T, attn_type='AAAB', drop_path_rate=0.2), tsinghua('a2ddc1190c224f768a41')),
        agent_swin_small=Variant('agent_swin_small: 50M params, 8.7 GFLOPs at 224 (official README).',
                                 dict(_SWIN_S, window_size=56), tsinghua('f607172c9fea4d6e99bb')),
        agent_swin_small_288=Variant('agent_swin_small_288: 50M params, 14.6 GFLOPs at 288 (official README).',
                                     dict(_SWIN_S, img_size=288, window_size=72),
                                     tsinghua('09760394e93b4046a25e', **_NO_CROP)),
        agent_swin_base=Variant('agent_swin_base: 88M params, 15.4 GFLOPs at 224 (official README).',
                                dict(_SWIN_B, window_size=56), tsinghua('4fcd2d0114bb490483c3')),
        agent_swin_base_384=Variant('agent_swin_base_384: 88M params, 46.3 GFLOPs at 384 (official README).',
                                    dict(_SWIN_B, img_size=384, window_size=96),
                                    tsinghua('bb84ee9058954706a557', **_NO_CROP)),
        agent_pvt_tiny=Variant('agent_pvt_tiny: 11.6M params, 2.0 GFLOPs at 224 (official README).',
                               dict(_PVT, depths=(2, 2, 2, 2), drop_path_rate=0.1), tsinghua('13fdf0e0a7c5498c934f')),
        agent_pvt_small=Variant('agent_pvt_small: 20.6M params, 4.0 GFLOPs at 224 (official README).',
                                dict(_PVT, depths=(3, 4, 6, 3), drop_path_rate=0.1), tsinghua('36b8be9a8863456685a3')),
        agent_pvt_medium=Variant('agent_pvt_medium: 35.9M params, 7.0 GFLOPs at 224 (official README).',
                                 dict(_PVT, depths=(3, 4, 18, 3), drop_path_rate=0.3),
                                 tsinghua('4d00ecacf18b45f9b88c')),
        agent_pvt_medium_256=Variant('agent_pvt_medium_256: 36.1M params, 9.2 GFLOPs at 256 (official README).',
                                     dict(_PVT, depths=(3, 4, 18, 3), img_size=256, drop_path_rate=0.3),
                                     tsinghua('654df734121643b19c52')),
        agent_pvt_large=Variant('agent_pvt_large: 48.7M params, 10.4 GFLOPs at 224 (official README).',
                                dict(_PVT, depths=(3, 8, 27, 3), drop_path_rate=0.3), tsinghua('040cfe0cfbbe4762ad09')),
        agent_deit_tiny=Variant('agent_deit_tiny: 6.0M params, 1.2 GFLOPs at 224 (official README).',
                                dict(_DEIT, embed_dim=192, num_heads=3, attn_kwargs={'agent': {'agent_num': 49}},
                                     drop_path_rate=0.), tsinghua('57e0904221824ee7b7af', **DEIT_CFG)),
        agent_deit_small=Variant('agent_deit_small: 22.7M params, 4.4 GFLOPs at 224 (official README).', _DEIT_S,
                                 tsinghua('fdd43304372541db8ea7', **DEIT_CFG)),
        agent_deit_small_448=Variant('agent_deit_small_448: 23.1M params, 17.7 GFLOPs at 448 (official README).',
                                     dict(_DEIT_S, img_size=448), tsinghua('a228f86241c445f1969b', **DEIT_CFG)),
        # agents in the first 4 blocks (the official agent_layer=4)
        agent_deit_base=Variant('agent_deit_base: 87.2M params, 17.6 GFLOPs at 224 (official README).',
                                dict(_DEIT, embed_dim=768, num_heads=12, attn_type='A' * 4 + 'B' * 8,
                                     attn_kwargs={'agent': {'agent_num': 81}}, drop_path_rate=0.3),
                                tsinghua('5115f15fdd7e4ab58fbc', **DEIT_CFG)),
        agent_cswin_tiny=Variant('agent_cswin_tiny: 21M params, 4.3 GFLOPs at 224 (official README).',
                                 dict(_CSWIN, embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16),
                                      drop_path_rate=0.2), tsinghua('8c562a74441e46d5902b')),
        agent_cswin_small=Variant('agent_cswin_small: 33M params, 6.8 GFLOPs at 224 (official README).',
                                  dict(_CSWIN, embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16),
                                       drop_path_rate=0.4), tsinghua('30eb8af675bc4b7a8747')),
        agent_cswin_base=Variant('agent_cswin_base: 73M params, 14.9 GFLOPs at 224 (official README).',
                                 dict(_CSWIN_B, drop_path_rate=0.5), tsinghua('c8035b0839b2410c8c9f')),
        agent_cswin_base_384=Variant('agent_cswin_base_384: 73M params, 46.3 GFLOPs at 384 (official README).',
                                     dict(_CSWIN_B, img_size=384, split_size=(1, 2, 12, 12), drop_path_rate=0.7),
                                     tsinghua('1239be0df44b47719432')),
    ))
