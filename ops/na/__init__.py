"""Generalized neighborhood attention (NATTEN's semantics): sliding, dilated, strided, causal, blocked and grid
windows over 1-3-D token grids, with relative position bias and extra tokens; border windows clamped inwards
(NATTEN) or centred and masked (``border='mask'``, TransNeXt); and the neighbourhood weighted sum ``na_av``
(NATTEN's ``na2d_av`` role).

``pattern`` is the one module that says which keys a query sees; ``api`` validates and dispatches; ``custom_op``
registers ``attnzoo::na_forward`` / ``na_backward`` (autograd, autocast, fake impls); ``backends`` holds the
reference, torch and triton implementations; ``partition`` the Swin/MaxViT window and grid helpers; ``modules``
the NATTEN-compatible modules and Swin's window attention module; ``av`` the weighted sum (its own custom op);
``flops`` the fvcore handles.
"""
from . import flops as _flops  # noqa: F401  (registers the fvcore FLOP handle)
from .api import na1d, na2d, na3d, neighborhood_attention
from .av import na_av
from .modules import (
    NeighborhoodAttention1D,
    NeighborhoodAttention2D,
    NeighborhoodAttention3D,
    WindowAttention1D,
    WindowAttention2D,
    WindowAttention3D,
)
from .partition import grid_attention, window_attention
from .pattern import NASpec, make_spec

__all__ = [
    'na1d', 'na2d', 'na3d', 'neighborhood_attention', 'na_av', 'window_attention', 'grid_attention',
    'NeighborhoodAttention1D', 'NeighborhoodAttention2D', 'NeighborhoodAttention3D', 'NASpec', 'make_spec',
    'WindowAttention1D', 'WindowAttention2D', 'WindowAttention3D',
]
