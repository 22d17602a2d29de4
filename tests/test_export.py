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
    'biformer': ('biformer_tiny', dict(depths=ONE, embed_dims=(16, 32, 48, 64), head_dim=8)),
    'transnext': ('transnext_micro', dict(depths=ONE, embed_dims=(16, 24, 32, 40), num_heads=(2, 2, 4, 4))),
    'glnet': ('glnet_4g', dict(depths=ONE, embed_dims=(32, 64, 96, 128))),
    'glnet_stl': ('glnet_stl', dict(depths=ONE)),
    'biformer_stl': ('biformer_stl', dict(depths=ONE)),
    'litv2': ('litv2_small', dict(depths=ONE)),
    'agent_pvt': ('agent_pvt_tiny', dict(depths=ONE)),
    'inline_pvt': ('inline_pvt_tiny', dict(depths=ONE)),
    'agent_deit': ('agent_deit_tiny', dict(depth=2)),
    'inline_deit': ('inline_deit_tiny', dict(depth=2)),
    # official letter codes (Agent-Swin-S's, InLine-Swin-T's); a shifted window block that at both sizes shifts
    # (Agent, stage 3) and does not (InLine, stage 4: map <= window)
    'agent_swin': ('agent_swin_tiny', dict(depths=(1, 1, 2, 1), attn_type='AABB', embed_dim=16,
                                           num_heads=(1, 1, 2, 2))),
    'inline_swin': ('inline_swin_tiny', dict(depths=(1, 1, 1, 2), embed_dim=16, num_heads=(1, 1, 2, 2))),
    # CSwin: agent / InLine global blocks (stages 1-2), padded stripes (stage 3: 8 and 10x12 maps, stripe 7), full map
    'agent_cswin': ('agent_cswin_tiny', dict(depths=ONE, embed_dim=16, num_heads=(2, 2, 2, 2))),
    'inline_cswin': ('inline_cswin_tiny', dict(depths=ONE, embed_dim=16, num_heads=(2, 2, 2, 2))),
    'maxvit': ('maxvit_na_tiny_tf_224', dict(depths=ONE, embed_dim=(16, 32, 48, 64), stem_width=16, dim_head=8,
                                            img_size=128)),  # window / grid 4: padded (masked) at 160x192
    'moat': ('tiny_moat_0', dict(depths=ONE)),
    'dinat_s': ('dinat_s_tiny', dict(depths=ONE, embed_dim=16, num_heads=(1, 1, 2, 2),  # patch stem, merging
                                     dilations=((1,), (2,), (2,), (1,)))),
    # two blocks in stage 1: LWA (windows of 7, token padding) and LGA (linear attention, LCM)
    'l2vit': ('l2vit_tiny', dict(depths=(2, 1, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(1, 1, 2, 2))),
}
SIZES = [(2, 128, 128), (1, 160, 192)]  # (batch, height, width): the export size, then another from the same file


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



@pytest.mark.parametrize('family', list(FAMILIES))
def test_export_static_onnx(family):
    """The static call (``torch.onnx.export(model, (x,), dynamo=True)``, no dynamic shapes): every size is a
    constant, so the models take their static branches when compiled (Swin's shift rule decided in Python,
    CSwin's stripe counts known); the file runs at its size in onnxruntime with eager's outputs. The exporter's
    optimiser is left out here (it is exercised by the dynamic test above) to keep CI time down."""
    name, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref = model(x).numpy()
    proto = torch.onnx.export(model, (x,), dynamo=True, optimize=False, verbose=False).model_proto
    assert {n.domain for n in proto.graph.node} <= {''}
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 96, 128]  # static
    session = ort.InferenceSession(proto.SerializeToString(), providers=['CPUExecutionProvider'])
    assert _rel(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], ref) < 1e-4

TINY_NAT = ['--model', 'nat_mini', '--model-kwargs', 'depths=(1,1,1,1)', 'embed_dim=16', 'num_heads=(1,1,2,2)']


def test_onnx_export_script(tmp_path):
    """onnx_export.py --dynamic-size --check-forward: one file, checked at the export size and another batch and
    size."""
    import onnx_export
    out = tmp_path / 'nat.onnx'
    result = onnx_export.main([str(out), *TINY_NAT, '--img-size', '96', '-b', '2', '--dynamic-size',
                               '--check-forward'])
    assert out.is_file() and len(result['checks']) == 2
    assert [tuple(c['shape']) for c in result['checks']] == [(2, 3, 96, 96), (3, 3, 72, 108)]
    assert all(c['max_rel_diff'] < 1e-4 for c in result['checks'])


@pytest.mark.parametrize('argv,message', [
    (['--model', 'nat_minii'], 'unknown model'),
    (['--model', 'nat_mini', '--training'], 'dropout / drop-path in training mode'),
    (['--model', 'nat_mini', '--opset', '17'], 'opset 18 or newer'),
    (['--model', 'nat_mini', '--img-size', '0'], 'must be >= 1'),
    (['--model', 'nat_mini', '--batch-size', '0'], 'must be >= 1'),
    (['--model', 'litv2_small', '--model-kwargs', 'depths=(1,1,1,1)', '--img-size', '64', '--opset', '18'],
     'deformable convolution (ONNX DeformConv, opset 19 or newer)'),
    (['--model', 'nat_mini', '--model-kwargs', 'depths=(1,1,1)'], 'cannot create it'),
    (['--model', 'litv2_small', '--model-kwargs', 'depths=(1,1,1,1)', '--img-size', '16'],
     'litv2_small cannot take a (1, 3, 16, 16) input (inputs need at least 29 px per side'),
])
def test_onnx_export_script_bad_requests(tmp_path, capsys, argv, message):
    """Bad requests: one line on stderr, exit status 2, no traceback, no file."""
    import onnx_export
    import zoo_common
    out = tmp_path / 'x.onnx'
    assert zoo_common.run_cli(onnx_export.main, [str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and 'Traceback' not in err
    assert not out.exists()


def test_onnx_export_script_failures_are_one_line(tmp_path, capsys, monkeypatch):
    """An exporter error, and a requested dynamic axis that the export kept static (here: forced by exporting
    without dynamic shapes), are one line and exit status 2, no file written."""
    import onnx_export
    import zoo_common
    out = tmp_path / 'x.onnx'
    real_export = torch.onnx.export

    def failing(*args, **kwargs):
        raise RuntimeError('no lowering for attnzoo.foo\n  a long exporter report')
    monkeypatch.setattr(torch.onnx, 'export', failing)
    assert zoo_common.run_cli(onnx_export.main, [str(out), *TINY_NAT, '--img-size', '64']) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith('the export failed (RuntimeError: no lowering for attnzoo.foo)') and len(err.splitlines()) == 1

    monkeypatch.setattr(torch.onnx, 'export', lambda *a, dynamic_shapes, **k: real_export(*a, **k))
    assert zoo_common.run_cli(onnx_export.main, [str(out), *TINY_NAT, '--img-size', '64', '-b', '2']) == 2
    err = capsys.readouterr().err.strip()
    assert 'the exported input is fixed at batch = 2' in err and len(err.splitlines()) == 1
    assert not out.exists()
