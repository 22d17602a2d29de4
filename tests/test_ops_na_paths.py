"""The torch backend's CPU paths beyond the conformance kit: the blocked fast path (torch_blocks) is taken exactly
where the windows partition the grid and matches the reference there; small maps that the window nearly covers
take the dense path (one block with a pair mask; forward and backward); the flash tiled forward handles queries
that see no key."""
from __future__ import annotations

import pytest
import torch
from _na_cases import Case, check_against_reference, make_inputs, run

from ops.na.backends import torch_blocks, torch_na
from ops.na.pattern import make_spec

BLOCKED = [
    Case((7, 7), (7, 7), rpb=True),  # the window covers the map: plain attention with the rpb as a bias
    Case((14, 14), (7, 7), dilation=(2, 2), rpb=True),  # DiNAT's dilated layer: each group is covered
    Case((12,), (3,), stride=(3,), rpb=True),  # blocks (Swin / MaxViT windows)
    Case((6, 9), (3, 3), stride=(3, 3), rpb=True, valid=(5, 8)),  # blocks with masked padding
    Case((8, 8), (2, 2), dilation=(4, 4), rpb=True, valid=(7, 7), extra=2),  # MaxViT grid, masked, extra tokens
    Case((7, 7), (7, 7), extra=3, extra_batch1=True),
    Case((4, 4, 4), (2, 2, 2), stride=(2, 2, 2), rpb=True),
    Case((6, 6, 3), (3, 3, 3), dilation=(2, 2, 1), rpb=True, extra=1),
]
NOT_BLOCKED = [
    Case((10,), (4,), stride=(4,)),  # 4 does not divide 10: the last window is clamped and overlaps
    Case((7, 7), (7, 7), causal=(True, False)),
    Case((7, 7), (7, 7), border='mask'),
    Case((9,), (3,), dilation=(2,)),  # unequal dilation groups
    Case((8,), (2,), stride=(2,), valid=(1,)),  # blocks of padding only: their queries see nothing
]


DENSE = [  # small maps whose window covers most of them: one block over the map with the pattern as a bias
    Case((6, 6), (5, 5), rpb=True),
    Case((6, 5), (3, 3), dilation=(2, 1), rpb=True, extra=2),
    Case((7, 7), (5, 5), rpb=True, border='mask', valid=(6, 7)),
    Case((8,), (5,), causal=(True,), rpb=True),
    Case((4, 4, 3), (3, 3, 3), rpb=True),
]


def _norm(case: Case) -> Case:
    nd = len(case.shape)
    return Case(case.shape, case.kernel, case.stride or (1,) * nd, case.dilation or (1,) * nd,
                case.causal or (False,) * nd, case.rpb, case.extra, case.valid, border=case.border,
                extra_batch1=case.extra_batch1)


def _layout(case: Case):
    c = _norm(case)
    spec = make_spec(c.shape, c.kernel, c.stride, c.dilation, c.causal, c.valid, c.border)
    return torch_blocks.layout(c.shape, spec, 'cpu')


@pytest.mark.parametrize('case', BLOCKED, ids=str)
def test_blocked_fast_path_matches_reference(case):
    assert _layout(case) is not None
    check_against_reference('torch', _norm(case), torch.float64, grad_lse=case.extra == 0)


@pytest.mark.parametrize('case', [BLOCKED[1], BLOCKED[4]], ids=str)
def test_blocked_explicit_backward_in_chunks_matches_reference(case, monkeypatch):
    # chunks of a few query rows of one block: the sliced chunk loop, rpb and extra-token gradients, grad_lse
    monkeypatch.setattr(torch_blocks, '_CHUNK_ELEMENTS', 64)
    check_against_reference('torch', _norm(case), torch.float64, grad_lse=case.extra == 0)


@pytest.mark.parametrize('case', NOT_BLOCKED, ids=str)
def test_blocked_fast_path_only_where_windows_partition(case):
    assert _layout(case) is None


@pytest.mark.parametrize('case', [BLOCKED[0], BLOCKED[3], DENSE[1]], ids=str)
def test_blocked_and_dense_paths_without_bias_gradient_use_flash_backward(case):
    case = _norm(case)
    inputs = make_inputs(case, torch.float64)
    q, k, v = (inputs[n].requires_grad_() for n in ('query', 'key', 'value'))
    ref = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = run('torch', case, inputs, return_lse=False)  # rpb does not require grad: flash backward
    exp = run('reference', case, dict(inputs, query=ref[0], key=ref[1], value=ref[2]), return_lse=False)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(exp, ref, grad)):
        torch.testing.assert_close(a, b)


def test_flash_forward_query_that_sees_no_key():
    # clamp border, stride 1: the windows of queries 8.. lie entirely beyond valid_shape=2
    case = _norm(Case((12,), (3,), rpb=True, valid=(2,)))
    assert _layout(case) is None
    check_against_reference('torch', case, torch.float64)
    out, lse = run('torch', case, make_inputs(case, torch.float64))
    assert torch.isneginf(lse[:, 8:]).all() and (out[:, 8:] == 0).all()


SLIDING = [  # general sliding windows (neither blocked nor dense): the tiled flash forward
    Case((13, 11), (3, 3), rpb=True, extra=2),  # padded last tiles, extra tokens (the bias padded once per class)
    Case((21,), (5,), dilation=(2,), causal=(True,), rpb=True, valid=(18,)),
    Case((9, 8, 7), (3, 3, 3), rpb=True, extra=1, extra_batch1=True),
]


@pytest.mark.parametrize('case', SLIDING, ids=str)
def test_flash_forward_in_many_chunks_matches_reference(case, monkeypatch):
    # one or two tiles per chunk: every class runs several chunks (its bias gathered once for the run, the cached
    # row indices sliced per chunk), the outputs put back from many chunks
    c = _norm(case)
    spec = make_spec(c.shape, c.kernel, c.stride, c.dilation, c.causal, c.valid, c.border)
    assert _layout(case) is None and torch_blocks.dense_layout(c.shape, spec, 'cpu') is None
    monkeypatch.setattr(torch_na, '_FLASH_CHUNK_ELEMENTS', 1)
    check_against_reference('torch', c, torch.float64, backward=False)


@pytest.mark.parametrize('case', DENSE, ids=str)
def test_dense_path_on_nearly_covered_maps_matches_reference(case):
    c = _norm(case)
    spec = make_spec(c.shape, c.kernel, c.stride, c.dilation, c.causal, c.valid, c.border)
    assert _layout(case) is None and torch_blocks.dense_layout(c.shape, spec, 'cpu') is not None
    check_against_reference('torch', c, torch.float64, grad_lse=c.extra == 0)
    check_against_reference('torch', c, torch.float32)


@pytest.mark.parametrize('case', [Case((14, 14), (7, 7), rpb=True), Case((12, 10), (7, 7), border='mask'),
                                  Case((40,), (13,), causal=(True,), rpb=True)], ids=str)
def test_dense_path_forward_in_bands_matches_reference(case):
    c = _norm(case)
    spec = make_spec(c.shape, c.kernel, c.stride, c.dilation, c.causal, c.valid, c.border)
    lay = torch_blocks.dense_layout(c.shape, spec, 'cpu')
    assert lay is not None and lay.bands is not None  # one flash call per band of rows
    check_against_reference('torch', c, torch.float64, grad_lse=True)
    check_against_reference('torch', c, torch.float32)


def test_dense_path_not_taken_on_sparse_maps():
    spec = make_spec((14, 14), 3)  # bound 196 / 9 > 4: query tiles
    assert torch_blocks.dense_layout((14, 14), spec, 'cpu') is None


def test_eager_calls_skip_the_custom_op_only_where_nothing_inspects_the_graph():
    from torch.utils.flop_counter import FlopCounterMode

    from ops.na.custom_op import eager_ok
    q = torch.randn(1, 7, 7, 1, 4)
    assert eager_ok(q, None, torch.nn.Parameter(torch.zeros(1)))
    assert not eager_ok(q.to('meta'))
    with FlopCounterMode(display=False):
        assert not eager_ok(q)
    with torch.device('cpu'):  # a torch function mode
        assert not eager_ok(q)
    assert not torch.jit.trace(lambda x: x * float(eager_ok(x)), q, check_trace=False)(q).any()


def test_dense_layout_explicit_backward_matches_reference():
    """The dense layout's own explicit backward (rpb gradient; the backend sends this case to its query tiles)."""
    from ops.na.backends import reference
    spec = make_spec((6, 5), 3, 1, (2, 1))
    lay = torch_blocks.dense_layout((6, 5), spec, 'cpu')
    gen = torch.Generator().manual_seed(0)
    q, k, v, g = (torch.randn(2, 6, 5, 2, 8, generator=gen, dtype=torch.float64) for _ in range(4))
    ak, av = (torch.randn(2, 2, 2, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    rpb = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64)
    out, lse = torch_blocks.forward(q, k, v, lay, .3, rpb, ak, av)
    ref_out, ref_lse = reference.forward(q, k, v, spec, .3, rpb, ak, av)
    torch.testing.assert_close(out, ref_out)
    got = torch_blocks.backward(g, q, k, v, out, lse, lay, .3, rpb, ak, av)
    want = reference.backward(g, q, k, v, ref_out, ref_lse, spec, .3, rpb, ak, av)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
