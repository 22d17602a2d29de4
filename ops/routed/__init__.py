"""Bi-level routing attention (BiFormer): region-level top-k routing, then token attention over the routed regions.

``regions`` is the one definition of the ``n_win x n_win`` partition; ``api`` validates and dispatches
(:func:`region_routing`, :func:`routed_attention`); ``custom_op`` registers ``attnzoo::routed_forward`` /
``routed_backward`` (the index tensor an op input; autograd, autocast, fake impls); ``backends`` holds the
reference, torch and triton implementations; ``flops`` the fvcore handle.
"""
from . import flops as _flops  # noqa: F401  (registers the fvcore FLOP handle)
from .api import region_means, region_routing, routed_attention
from .regions import RegionGrid, region_grid

__all__ = ['region_routing', 'routed_attention', 'region_means', 'RegionGrid', 'region_grid']
