"""ONNX lowerings of the attnzoo custom ops (``ops/*/onnx.py``): every op exported by the standard dynamo call with
dynamic batch and map sizes, run in onnxruntime at the export size and at other sizes from the same file, against
eager; only default-domain ONNX ops; the NA lowering gathers the K neighbours (no N x N tensor); the explicit
``ops.onnx_translation_table()``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _op_module import Call

import ops

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

B = torch.export.Dim('b', min=1, max=16)
H = torch.export.Dim('h', min=4, max=256)
W = torch.export.Dim('w', min=4, max=256)
D2 = {0: B, 1: H, 2: W}


def _qkv(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g) for _ in range(3))


def _export(fn, example, dynamic_shapes, **kwargs):
    dynamic_shapes = None if dynamic_shapes is None else (dynamic_shapes,)  # forward(*args): one spec per arg
    program = torch.onnx.export(Call(fn).eval(), example, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False,
                                **kwargs)
    return program.model_proto


def _check(proto, fn, inputs: list[tuple]) -> None:
    """Only default-domain nodes; onnxruntime's outputs equal eager's for every input tuple."""
    assert {n.domain for n in proto.graph.node} <= {'', 'ai.onnx'}
    assert not proto.functions or all(f.domain.startswith('pkg.') or f.domain == '' for f in proto.functions)
    session = ort.InferenceSession(proto.SerializeToString(), providers=['CPUExecutionProvider'])
    for args in inputs:
        ref = fn(*args)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r.numpy(), rtol=1e-5, atol=1e-5)


NA_CASES = {
    'na2d-rpb-extra': (lambda q, k, v, rpb, ak, av: ops.na2d(q, k, v, 3, dilation=2, rpb=rpb, additional_keys=ak,
                                                            additional_values=av, return_lse=True)),
    'na2d-mask-causal': (lambda q, k, v: ops.na2d(q, k, v, (3, 5), is_causal=(True, False), border='mask',
                                                  return_lse=True)),
    'window-pad-masked': (lambda q, k, v: ops.window_attention(q, k, v, 7)),
    'grid-pad': (lambda q, k, v: ops.grid_attention(q, k, v, 4)),
}


@pytest.mark.parametrize('name', list(NA_CASES))
def test_na_2d_dynamic(name):
    fn = NA_CASES[name]
    q, k, v = _qkv(2, 12, 13, 2, 8)
    extra = ()
    dyn = (D2,) * 3
    if name == 'na2d-rpb-extra':
        extra = (torch.randn(2, 5, 5), torch.randn(2, 4, 2, 8), torch.randn(2, 4, 2, 8))
        dyn = dyn + (None, {0: B}, {0: B})
    proto = _export(fn, (q, k, v, *extra), dyn)
    others = [(q, k, v, *extra)]
    for seed, (b, h, w) in enumerate([(3, 7, 21), (1, 16, 14)], 1):
        more = () if not extra else (extra[0], *(torch.randn(b, 4, 2, 8) for _ in range(2)))
        others.append((*_qkv(b, h, w, 2, 8, seed=seed), *more))
    _check(proto, fn, others)


def test_na_1d_3d_and_av_dynamic():
    fn1 = (lambda q, k, v: ops.na1d(q, k, v, 5, dilation=2))
    _check(_export(fn1, _qkv(2, 15, 2, 8), ({0: B, 1: H},) * 3), fn1, [_qkv(2, 15, 2, 8), _qkv(3, 33, 2, 8, seed=1)])
    fn3 = (lambda q, k, v: ops.na3d(q, k, v, (3, 3, 2), is_causal=(True, False, False)))
    d3 = {0: B, 1: torch.export.Dim('d', min=4, max=64), 2: H, 3: W}
    _check(_export(fn3, _qkv(2, 5, 6, 7, 2, 8), (d3,) * 3), fn3, [_qkv(1, 4, 9, 5, 2, 8, seed=1)])
    fav = (lambda w, v: ops.na_av(w, v, 3, border='mask'))
    args = (torch.randn(2, 9, 11, 2, 9), torch.randn(2, 9, 11, 2, 8))
    _check(_export(fav, args, (D2, D2)), fav, [args, (torch.randn(1, 5, 17, 2, 9), torch.randn(1, 5, 17, 2, 8))])


def _routed(masked: bool):
    def fn(q, k, v):
        qp, shape = ops.pad_to_multiple(q, 4, (1, 2))
        kp, _ = ops.pad_to_multiple(k, 4, (1, 2))
        vp, _ = ops.pad_to_multiple(v, 4, (1, 2))
        valid = shape if masked else None
        _, idx = ops.region_routing(qp.flatten(3), kp.flatten(3), 4, 3, valid_shape=valid)
        out, lse = ops.routed_attention(qp, kp, vp, idx, 4, return_lse=True, valid_shape=valid)
        return ops.crop(out, shape, (1, 2)), ops.crop(lse, shape, (1, 2))
    return fn


@pytest.mark.parametrize('masked', [False, True])
def test_routed_and_crop_dynamic(masked):
    fn = _routed(masked)
    example = _qkv(2, 16, 12, 2, 8) if not masked else _qkv(2, 14, 13, 2, 8)
    _check(_export(fn, example, (D2,) * 3), fn, [example, _qkv(3, 9, 22, 2, 8, seed=1)])


def test_na_memory_is_k_neighbours_not_n_squared():
    """No value in the exported graph has N x N elements per head: NA gathers the K neighbours of each query."""
    fn = (lambda q, k, v: ops.na2d(q, k, v, 3))
    q, k, v = _qkv(1, 16, 16, 1, 4)
    program = torch.onnx.export(Call(fn).eval(), (q, k, v), dynamo=True, verbose=False)
    n = 16 * 16
    sizes = [math.prod(d.dim_value for d in vi.type.tensor_type.shape.dim)
             for vi in program.model_proto.graph.value_info if vi.type.tensor_type.shape.dim]
    assert sizes and max(sizes) <= n * 9 * 4  # the gathered [1, 1, N, 9, 4] keys, far below N * N = 65536


def test_translation_table():
    table = ops.onnx_translation_table()
    for name in ('na_forward', 'na_av_forward', 'routed_forward', 'crop'):
        assert getattr(torch.ops.attnzoo, name).default in table
    fn = (lambda q, k, v: ops.na2d(q, k, v, 3))
    q, k, v = _qkv(1, 6, 6, 1, 4)
    _check(_export(fn, (q, k, v), None, custom_translation_table=table), fn, [(q, k, v)])
