"""What Agent and InLine (LeapLabTHU's two families) share: the four skeletons they swap their attention into, how
their releases are published (TsinghuaCloud shares), and how such a family is registered (:func:`register_leaplab`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._attn_kinds import Letters
from ._cswin import CSWin
from ._deit import DeiT
from ._family import Family, Variant, register
from ._pvt import PVT
from ._swin import Swin

__all__ = ['DEIT_CFG', 'SKELETONS', 'register_leaplab', 'tsinghua']

SKELETONS: dict[str, type] = dict(swin=Swin, pvt=PVT, deit=DeiT, cswin=CSWin)
DEIT_CFG = dict(pool_size=None, classifier='head')  # DeiT: a class-token classifier, token features


def tsinghua(share: str | None, **cfg: Any) -> dict[str, dict[str, Any]]:
    """The ``in1k`` release of a TsinghuaCloud share id (None: no released weights) with ``cfg``'s changes."""
    return {'in1k': dict(cfg, url=f'https://cloud.tsinghua.edu.cn/f/{share}/?dl=1' if share else '')}


def register_leaplab(name: str, module: str, repo: str, paper_ids: str, paper_name: str,
                     letters: Mapping[str, Letters], variants: Mapping[str, Variant]) -> Family:
    """Register a LeapLabTHU family on the skeletons (``repo``: its github.com/LeapLabTHU repository; ``letters``: what
    the letters of its official codes mean per skeleton). Each release is cached under its own name (the share URLs
    do not name their files); the CSWin runs were trained with EMA (``main_ema.py``) and load their EMA weights by
    default, the Swin / PVT / DeiT releases hold only ``model``."""
    return register(Family(
        name, module, SKELETONS, variants=variants, letters=letters, cache_per_model=True,
        ema=frozenset(variant for variant, row in variants.items() if row.args['skeleton'] == 'cswin'),
        cfg=dict(first_conv='patch_embed.proj', license='unknown', origin_url=f'https://github.com/LeapLabTHU/{repo}',
                 paper_ids=paper_ids, paper_name=paper_name)))
