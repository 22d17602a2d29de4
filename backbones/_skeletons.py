"""What Agent and InLine (LeapLabTHU's two families) share: the four skeletons they swap their attention into, and
how their releases are published (TsinghuaCloud shares)."""
from __future__ import annotations

from typing import Any

from ._cswin import CSWin
from ._deit import DeiT
from ._pvt import PVT
from ._swin import Swin

__all__ = ['DEIT_CFG', 'SKELETONS', 'tsinghua']

SKELETONS: dict[str, type] = dict(swin=Swin, pvt=PVT, deit=DeiT, cswin=CSWin)
DEIT_CFG = dict(pool_size=None, classifier='head')  # DeiT: a class-token classifier, token features


def tsinghua(share: str | None, **cfg: Any) -> dict[str, dict[str, Any]]:
    """The ``in1k`` release of a TsinghuaCloud share id (None: no released weights) with ``cfg``'s changes."""
    return {'in1k': dict(cfg, url=f'https://cloud.tsinghua.edu.cn/f/{share}/?dl=1' if share else '')}
