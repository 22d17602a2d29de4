"""ONNX lowering of ``attnzoo::crop`` (:mod:`ops._shape`): one ``Slice`` to the (run-time) sizes."""
from __future__ import annotations

from collections.abc import Sequence

from onnxscript.function_libs.torch_lib.tensor_typing import TTensor
from onnxscript.onnx_types import INT64

from .onnx_lowering import const, ints, lowering, op, vec


@lowering('attnzoo::crop')
def crop(x: TTensor, dims: Sequence[int], sizes: Sequence[INT64]) -> TTensor:
    """``x`` cut to the first ``sizes[i]`` entries of dim ``dims[i]``."""
    return op.Slice(x, const([0] * len(dims)), vec(*ints(sizes, len(dims))), const(list(dims)))
