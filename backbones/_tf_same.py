"""TF ``'SAME'`` convolution and average pooling for the families ported from TensorFlow (MaxViT, MOAT).

TF's ``'SAME'`` gives ``ceil(L / stride)`` outputs per axis and puts the odd padding element at the bottom/right, so
a strided layer's padding depends on the input size. timm's ``Conv2dSame`` / ``AvgPool2dSame`` compute it through a
float ``ceil(L / s)``, whose symbolic form kept a four-stage MaxViT's ``torch.export`` in sympy for minutes; these
layers pad through :func:`ops.pad_same` (integer arithmetic, a short expression under ``torch.export``) and take the
kernel size, stride and dilation from their own arguments, so a model states them once. Eager outputs equal timm's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

import ops

__all__ = ['SameAvgPool2d', 'SameConv2d']

Size2 = int | tuple[int, int]


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TF ``'SAME'`` padding; parameters (``weight``, ``bias``) and init are ``nn.Conv2d``'s.

    Where symmetric padding gives the same result (stride 1 and an odd dilated kernel span) it is a plain conv with
    that static padding (timm's ``create_conv2d(..., padding='same')``); otherwise (strided, or an even span) the
    input is padded in ``forward`` from its run-time size (:func:`ops.pad_same`) and convolved unpadded.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size2, stride: Size2 = 1, *,
                 dilation: Size2 = 1, groups: int = 1, bias: bool = True, device=None, dtype=None):
        kernel, step, dil = (ops.size_pair(v, f'SameConv2d {name}') for v, name in
                             ((kernel_size, 'kernel_size'), (stride, 'stride'), (dilation, 'dilation')))
        static = all(s == 1 and d * (k - 1) % 2 == 0 for k, s, d in zip(kernel, step, dil))
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dil)) if static else 0
        super().__init__(in_channels, out_channels, kernel, step, padding, dil, groups, bias, device=device,
                         dtype=dtype)
        self.dynamic_padding = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_padding:
            x = ops.pad_same(x, self.kernel_size, self.stride, self.dilation)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (', padding=same' if self.dynamic_padding else '')


@register_notrace_module  # torch.fx: a leaf (the valid-only pool's padding: Python on the input size)
class SameAvgPool2d(nn.Module):
    """Average pooling with TF ``'SAME'`` padding (no parameters).

    ``count_include_pad=False`` (default) is TF's ``AveragePooling2D(padding='same')``: padded elements are left out of
    each average (MOAT). ``True`` averages the padding zeros too, as timm's ``AvgPool2dSame`` does (timm's MaxViT port,
    which ours matches; equal to TF wherever nothing is padded, e.g. every map of a 224 input).
    """

    def __init__(self, kernel_size: Size2, stride: Size2 | None = None, count_include_pad: bool = False):
        super().__init__()
        self.kernel_size = ops.size_pair(kernel_size, 'SameAvgPool2d kernel_size')
        self.stride = self.kernel_size if stride is None else ops.size_pair(stride, 'SameAvgPool2d stride')
        self.count_include_pad = count_include_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        if self.count_include_pad:
            return F.avg_pool2d(ops.pad_same(x, k, s), k, s)
        if torch.compiler.is_compiling():
            # the zero-padded sum over the padded count (equal up to rounding): ceil_mode with a size-derived padding
            # makes output sizes that symbolic shapes cannot prove equal to the strided conv's
            count = ops.pad_same(x.new_ones(1, 1, *x.shape[-2:]), k, s)
            return F.avg_pool2d(ops.pad_same(x, k, s), k, s) / F.avg_pool2d(count, k, s)
        # the first half of the padding is symmetric padding; the rest falls past the end, where ceil_mode windows stop
        pads = tuple(ops.same_padding(n, ki, si)[0] for n, ki, si in zip(x.shape[-2:], k, s))
        return F.avg_pool2d(x, k, s, padding=pads, ceil_mode=True, count_include_pad=False)

    def extra_repr(self) -> str:
        return f'kernel_size={self.kernel_size}, stride={self.stride}, count_include_pad={self.count_include_pad}'
