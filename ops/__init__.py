"""attnzoo ops: the attention operators every backbone shares, behind one dispatching API.

One sub-package per op family, each with its semantics, backends, custom-op registration and fvcore handle:

* :mod:`ops.na` — generalized neighborhood attention (NATTEN-compatible ``na1d/na2d/na3d``; windows, grids);
* :mod:`ops.dense` — dense cross-attention of N queries over M keys with an additive bias (SDPA underneath),
  agent attention as two such calls, and TransNeXt's position-bias tables over pooled keys
  (``transnext_stage_tables``, a custom op under ``torch.compile``);
* :mod:`ops.linear` — kernelised linear attention (RALA's, L2ViT's and InLine's variants), the state in fp32;
* :mod:`ops.routed` — bi-level routing attention (BiFormer): top-k region routing, token attention over the routed
  regions without a gathered copy of K/V.

:mod:`ops.maps` records the exact attention of chosen queries from every op (``record_attention``,
``attention_maps(model, x, points)``); each family computes those rows in its ``maps`` module.

Shared by all: :mod:`ops._registry` (backends keyed by ``(op, backend)`` with declared capabilities),
:mod:`ops._checks` (input checks and the autocast rule), :mod:`ops.merge` (exact lse merging).
"""
import torch.fx

from . import _export, na, routed
from ._checks import size_pair
from ._export import add_onnx_lowering_module, onnx_translation_table, register_onnx_lowerings
from ._fx import register_fx_leaves
from ._pool import adaptive_avg_pool2d
from ._registry import available_backends, backend_names, get_backend, resolve_backend
from ._shape import crop, pad_same, pad_to_multiple, same_padding
from .dense import StageTables, agent_attention, dense_attention, relative_position_cpb, transnext_stage_tables
from .linear import apply_rope, linear_attention, rope_2d
from .maps import AttentionMap, TokenGrid, attention_maps, record_attention
from .merge import merge_attentions
from .na import (
    NASpec,
    NeighborhoodAttention1D,
    NeighborhoodAttention2D,
    NeighborhoodAttention3D,
    WindowAttention1D,
    WindowAttention2D,
    WindowAttention3D,
    grid_attention,
    make_spec,
    na1d,
    na2d,
    na3d,
    na_av,
    neighborhood_attention,
    window_attention,
)
from .routed import region_routing, routed_attention

# torch.fx: each public op is one leaf node of a symbolic trace (ops._fx)
FX_LEAVES = (na1d, na2d, na3d, neighborhood_attention, na_av, window_attention, grid_attention, merge_attentions,
             pad_to_multiple, crop, pad_same, adaptive_avg_pool2d, dense_attention, agent_attention, linear_attention,
             rope_2d, apply_rope, region_routing, routed_attention, NeighborhoodAttention1D, NeighborhoodAttention2D,
             NeighborhoodAttention3D, WindowAttention1D, WindowAttention2D, WindowAttention3D)
for _leaf in FX_LEAVES:
    if not isinstance(_leaf, type):
        torch.fx.wrap(_leaf.__name__)
register_fx_leaves(FX_LEAVES)
_export.install()  # the ONNX lowerings reach torch.onnx.export without loading onnxscript now (ops._export)

__all__ = [
    'na', 'na1d', 'na2d', 'na3d', 'neighborhood_attention', 'na_av', 'merge_attentions',
    'pad_to_multiple', 'crop', 'pad_same', 'same_padding', 'size_pair', 'adaptive_avg_pool2d', 'window_attention',
    'grid_attention', 'NeighborhoodAttention1D', 'NeighborhoodAttention2D', 'NeighborhoodAttention3D',
    'NASpec', 'make_spec', 'available_backends', 'backend_names', 'get_backend', 'resolve_backend',
    'WindowAttention1D', 'WindowAttention2D', 'WindowAttention3D', 'dense_attention',
    'linear_attention', 'rope_2d', 'apply_rope', 'agent_attention', 'StageTables', 'relative_position_cpb',
    'transnext_stage_tables', 'routed', 'region_routing', 'routed_attention',
    'onnx_translation_table', 'register_onnx_lowerings', 'add_onnx_lowering_module',
    'AttentionMap', 'TokenGrid', 'attention_maps', 'record_attention',
]
