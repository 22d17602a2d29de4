"""Adaptive average pooling that stays right at every input size once exported.

``F.adaptive_avg_pool2d`` traced by ``torch.export`` with dynamic height/width is lowered by the ONNX exporter to
one ``AveragePool`` whose kernel and stride are fixed from the size seen at export, so the file gives a wrong
output shape (and then a ``Reshape`` error) at any other size. Compiled / exported code therefore pools as two
matrix products with the pooling weights built from the run-time sizes (PyTorch's bins: ``[floor(i n / s),
ceil((i + 1) n / s))``); eager code keeps ``F.adaptive_avg_pool2d`` (outputs bit-identical to it).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['adaptive_avg_pool2d']


def _bins(n, out: int, like: Tensor) -> Tensor:
    """``[out, n]``: row ``i`` averages PyTorch's adaptive bin ``i`` of ``n`` entries (sizes may be symbolic)."""
    i = torch.arange(out, device=like.device)
    start, end = (i * n) // out, ((i + 1) * n + out - 1) // out
    j = torch.arange(n, device=like.device)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: Tensor, output_size: int | Sequence[int]) -> Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` for ``x [..., H, W]``; exportable with dynamic ``H, W``."""
    if not torch.compiler.is_compiling():
        return F.adaptive_avg_pool2d(x, output_size)
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _bins(x.shape[-2], oh, x) @ x @ _bins(x.shape[-1], ow, x).transpose(0, 1)
