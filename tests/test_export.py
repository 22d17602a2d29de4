"""Whole zoo models through torch.export with dynamic batch/height/width and through ONNX (one file, onnxruntime) at
two input sizes, against eager within 1e-4 of the logits' scale. Reduced configs of each family (one block per stage,
narrow widths: the same code paths as the full models, export in seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

ONE = (1, 1, 1, 1)
# family -> (model, reduced kwargs); the families whose export with dynamic sizes is supported
FAMILIES = {
    'nat': ('nat_mini', dict(depths=ONE, embed_dim=16, num_heads=(1, 1, 2, 2))),
    'dinat': ('dinat_mini', dict(depths=ONE, embed_dim=16, num_heads=(1, 1, 2, 2), dilations=((1,), (2,), (2,), (1,)))),
    'ravlt': ('ravlt_tiny', dict(depths=ONE)),
}
SIZES = [(2, 128, 128), (1, 96, 160)]  # (batch, height, width): the export size, then another from the same file


def _rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize('family', list(FAMILIES))
def test_export_dynamic_and_onnx(family):
    name, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    inputs = [torch.randn(b, 3, h, w) for b, h, w in SIZES]
    auto = torch.export.Dim.AUTO
    program = torch.export.export(model, (inputs[0],), dynamic_shapes=({0: auto, 2: auto, 3: auto},))
    with torch.no_grad():
        refs = [model(x).numpy() for x in inputs]
        for x, ref in zip(inputs, refs):
            assert _rel(program.module()(x).numpy(), ref) < 1e-4
    proto = torch.onnx.export(program, dynamo=True, verbose=False).model_proto
    assert {n.domain for n in proto.graph.node} <= {''}  # default domain only: no plugin needed
    session = ort.InferenceSession(proto.SerializeToString(), providers=['CPUExecutionProvider'])
    for x, ref in zip(inputs, refs):
        assert _rel(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], ref) < 1e-4
