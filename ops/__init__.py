"""attnzoo ops: generalized neighborhood attention (NATTEN-compatible) on reference / torch / triton backends.

``import ops`` registers the ``attnzoo::na_forward`` / ``na_backward`` custom ops and, when fvcore is installed,
their FLOP handle.
"""
from . import flops as _flops  # noqa: F401  (registers the fvcore FLOP handle)
from ._pattern import NASpec, make_spec
from .api import merge_attentions, na1d, na2d, na3d, neighborhood_attention
from .backends import available_backends, backend_names
from .helpers import grid_attention, pad_to_multiple, window_attention
from .modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D

__all__ = [
    'na1d', 'na2d', 'na3d', 'neighborhood_attention', 'merge_attentions',
    'pad_to_multiple', 'window_attention', 'grid_attention',
    'NeighborhoodAttention1D', 'NeighborhoodAttention2D', 'NeighborhoodAttention3D',
    'NASpec', 'make_spec', 'available_backends', 'backend_names',
]
