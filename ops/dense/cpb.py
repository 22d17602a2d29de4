"""TransNeXt's resolution-dependent tables (continuous position bias over pooled keys, length scales) and the
custom op ``attnzoo::transnext_stage_tables`` that yields them under ``torch.compile``.

TransNeXt's aggregated attention (``backbones.transnext``) is a border-masked :func:`ops.na2d` window merged with
:func:`ops.dense_attention` over pooled tokens; the dense part's bias is an MLP on log-spaced relative coordinates
of every (query, pooled key) pair, and both parts' queries are scaled by ``log(valid local keys + pooled keys)``.
These tables depend on the map size only: computed on CPU once per (sizes, device) and cached. Their row count is
``torch.unique``'s (data-dependent), which no shape formula gives, so under ``torch.compile`` they come from one
custom op with a fake impl of dynamic sizes (``fullgraph=True`` holds with static and dynamic shapes); its ONNX
lowering is :mod:`ops.dense.onnx_cpb`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..na.pattern import axis_window

__all__ = ['StageTables', 'relative_position_cpb', 'transnext_stage_tables']


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached for later calls, autograd ones too: never inference tensors
def _axis_coords(q_len: int, k_len: int, pretrain_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of the relative coordinates: sorted distinct values ``[U]`` and each (query, key) pair's index
    ``[q_len, k_len]`` into them. Keys sit at the mean position of their adaptive-pooling bin; coordinates are
    ``(q - k) / (pretrain_len - 1) * 8`` (the official formula, float32)."""
    q = torch.arange(q_len, dtype=torch.float32)
    k = F.adaptive_avg_pool1d(q[None], k_len)[0]
    rel = (q[:, None] - k[None, :]) / (pretrain_len - 1) * 8
    values, index = torch.unique(rel.reshape(-1), return_inverse=True)
    return values, index.view(q_len, k_len)


def relative_position_cpb(query_size: tuple[int, int], key_size: tuple[int, int], pretrain_size: tuple[int, int]):
    """The official ``get_relative_position_cpb`` tables, factorised per axis.

    Returns the coordinate table ``[Uh * Uw, 2]`` (log-spaced: ``sign(x) log2(|x| + 1) / 3``) and per axis the
    index ``[q, k]`` into its values; pair ``((qh, qw), (kh, kw))`` reads row ``ih[qh, kh] * Uw + iw[qw, kw]``.
    The official 2-D ``torch.unique`` of the pairs gives the same rows in the same (sorted) order: the pairs are the
    full product of the per-axis values.
    """
    (vh, ih), (vw, iw) = (_axis_coords(q, k, p) for q, k, p in zip(query_size, key_size, pretrain_size))
    table = torch.stack(torch.meshgrid(vh, vw, indexing='ij'), -1).reshape(-1, 2)
    table = torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / torch.log2(torch.tensor(8, dtype=torch.float32))
    return table, ih, iw


@dataclass(frozen=True)
class StageTables:
    """One stage's run-time tables at one input size."""

    table: torch.Tensor  # [Uh, Uw, 2] log-spaced relative coordinates of the distinct (H, W) value pairs
    ih: torch.Tensor  # [Hq, Hk] index into the H values
    iw: torch.Tensor  # [Wq, Wk] index into the W values
    scale: torch.Tensor  # [N] length scale of every query

    def bias(self, fc1: nn.Linear, fc2: nn.Linear) -> torch.Tensor:
        """``[heads, N, M]``: the CPB MLP on the distinct coordinates, gathered for every (query, key) pair (two
        row gathers, W first while the rows are short, then one transposing copy)."""
        mlp = fc2(F.relu(fc1(self.table.to(fc1.weight.dtype)))).permute(2, 0, 1)  # [heads, Uh, Uw]
        heads = mlp.shape[0]
        (hq, hk), (wq, wk) = self.ih.shape, self.iw.shape
        grid = mlp.index_select(2, self.iw.reshape(-1))  # [heads, Uh, Wq * Wk]
        grid = grid.index_select(1, self.ih.reshape(-1)).view(heads, hq, hk, wq, wk)
        return grid.transpose(2, 3).reshape(heads, hq * wq, hk * wk)


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached for later calls, autograd ones too: never inference tensors
def _stage_tables(size: tuple[int, int], pool: tuple[int, int], pretrain: tuple[int, int], window: int | None,
                  device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    table, ih, iw = relative_position_cpb(size, pool, pretrain)
    n_pool = pool[0] * pool[1]
    if window is None:  # full attention: log(N) for every query (a float64 scalar officially)
        scale = torch.full((size[0] * size[1],), math.log(n_pool), dtype=torch.float64)
    else:  # valid keys of the border-masked window + pooled tokens (float32, as the official buffer)
        counts = [axis_window(n, window, 1, 1, False, border='mask')[1] for n in size]
        local = (counts[0][:, None] * counts[1][None, :]).reshape(-1).to(torch.float32)
        scale = torch.log(local + n_pool)
    table = table.view(int(ih.max()) + 1, int(iw.max()) + 1, 2)
    return table.to(device), ih.to(device), iw.to(device), scale.to(device)


@torch.library.custom_op('attnzoo::transnext_stage_tables', mutates_args=())
def _stage_tables_op(h: int, w: int, ph: int, pw: int, pth: int, ptw: int, window: int, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cached tables as an op, so that torch.compile keeps symbolic sizes: ``torch.unique`` gives the number of
    distinct coordinate values, which no shape formula does (copies: an op's outputs are its own)."""
    tables = _stage_tables((h, w), (ph, pw), (pth, ptw), window or None, str(device))
    return tuple(t.clone() for t in tables)


@_stage_tables_op.register_fake
def _(h, w, ph, pw, pth, ptw, window, device):
    ctx = torch.library.get_ctx()
    uh, uw = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    scale_dtype = torch.float64 if window == 0 else torch.float32
    return (torch.empty(uh, uw, 2, device=device), torch.empty(h, ph, dtype=torch.long, device=device),
            torch.empty(w, pw, dtype=torch.long, device=device), torch.empty(h * w, dtype=scale_dtype, device=device))


def transnext_stage_tables(size: tuple[int, int], pool: tuple[int, int], pretrain: tuple[int, int],
                           window: int | None, device: torch.device) -> StageTables:
    """The tables of a stage at map ``size`` with ``pool`` keys (``window`` None: full attention, no local part);
    computed on CPU once per (sizes, device) and cached; any size under torch.compile, static or dynamic."""
    if torch.compiler.is_compiling():
        return StageTables(*_stage_tables_op(*size, *pool, *pretrain, window or 0, torch.device(device)))
    return StageTables(*_stage_tables(tuple(size), tuple(pool), tuple(pretrain), window or None, str(device)))
