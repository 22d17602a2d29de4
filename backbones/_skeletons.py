"""What Agent and InLine (LeapLabTHU's two families) share: the four skeletons they swap their attention into, and
how their releases are published (TsinghuaCloud shares)."""
from __future__ import annotations

from typing import Any

from . import _cswin, _deit, _pvt, _swin
from .checkpoint import filter_by_class

__all__ = ['DEIT_CFG', 'SKELETONS', 'checkpoint_filter_fn', 'tsinghua']

SKELETONS: dict[str, type] = dict(swin=_swin.Swin, pvt=_pvt.PVT, deit=_deit.DeiT, cswin=_cswin.CSWin)
checkpoint_filter_fn = filter_by_class({_swin.Swin: _swin.checkpoint_filter_fn, _pvt.PVT: _pvt.checkpoint_filter_fn,
                                        _deit.DeiT: _deit.checkpoint_filter_fn,
                                        _cswin.CSWin: _cswin.checkpoint_filter_fn})
DEIT_CFG = dict(pool_size=None, classifier='head')  # DeiT: a class-token classifier, token features


def tsinghua(share: str | None, **cfg: Any) -> dict[str, dict[str, Any]]:
    """The ``in1k`` release of a TsinghuaCloud share id (None: no released weights) with ``cfg``'s changes."""
    return {'in1k': dict(cfg, url=f'https://cloud.tsinghua.edu.cn/f/{share}/?dl=1' if share else '')}
