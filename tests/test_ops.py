"""ops: backends against the reference, gradients, equivalences with window/grid partition, helpers, bad input."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _na_cases import CASES, Case, check_against_reference, make_inputs, random_case, run

import ops
from ops.na.backends import reference, torch_na
from ops.na.pattern import make_spec


@pytest.mark.parametrize('case', CASES, ids=str)
def test_torch_backend_matches_reference(case):
    check_against_reference('torch', case, torch.float32)


@pytest.mark.parametrize('case', [CASES[3], CASES[7], CASES[16]], ids=str)
def test_torch_backend_half_precision_inputs(case):
    check_against_reference('torch', case, torch.float16, backward=False)
    check_against_reference('torch', case, torch.bfloat16, backward=False)


@pytest.mark.parametrize('backend', ['torch', 'reference'])
def test_gradient_through_lse(backend):
    check_against_reference(backend, CASES[7], torch.float64, grad_lse=True)


def test_random_sweep_torch_vs_reference():
    """Seeded sweep over the pattern space (1-3-D, kernel/stride/dilation/causal per axis, rpb, extras, valid)."""
    rng = random.Random(1234)
    for i in range(300):
        case = random_case(rng)
        check_against_reference('torch', case, torch.float64, seed=i, grad_lse=i % 3 == 0)


def test_torch_backend_chunking_matches_reference(monkeypatch):
    monkeypatch.setattr(torch_na, '_CHUNK_ELEMENTS', 500)  # many chunks, uncached bias indices
    monkeypatch.setattr(torch_na, '_CACHE_ELEMENTS', 0)
    torch_na._plan.cache_clear()
    try:
        check_against_reference('torch', CASES[7], torch.float64)
    finally:
        torch_na._plan.cache_clear()


@pytest.mark.parametrize('backend', ['reference', 'torch'])
def test_gradcheck_float64(backend):
    case = Case((5, 6), (3, 3), (1, 2), (1, 2), (False, True), rpb=True, extra=2, batch=1, heads=2, head_dim=4)
    inputs = make_inputs(case, torch.float64)
    names = [n for n, t in inputs.items() if t is not None]

    def fn(*tensors):
        return run(backend, case, {**inputs, **dict(zip(names, tensors))})

    tensors = [inputs[n].requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(fn, tensors, atol=1e-6)


def test_reference_backward_matches_its_autograd():
    """The reference's explicit backward equals autograd through its (differentiable) forward."""
    case = CASES[16]
    inputs = make_inputs(case, torch.float64)
    spec = make_spec(case.shape, case.kernel, case.stride, case.dilation, case.causal, case.valid)
    args = [inputs[n] for n in ('query', 'key', 'value')]
    extra = [inputs[n] for n in ('rpb', 'additional_keys', 'additional_values')]
    leaves = [t.requires_grad_(True) for t in args + extra]
    out, lse = reference.forward(*leaves[:3], spec, .5, *leaves[3:])
    g = torch.randn_like(out)
    want = torch.autograd.grad(out, leaves, g)
    got = reference.backward(g, *[t.detach() for t in leaves[:3]], out, lse, spec, .5,
                             *[t.detach() for t in leaves[3:]])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_deterministic_backward():
    case = CASES[12]
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            inputs = make_inputs(case, torch.float32)
            leaves = [t.requires_grad_(True) for t in inputs.values() if t is not None]
            out = run('torch', case, inputs, return_lse=False)
            grads.append(torch.autograd.grad(out, leaves, torch.ones_like(out)))
    finally:
        torch.use_deterministic_algorithms(prev)
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_dispatch_and_backend_listing():
    assert {'reference', 'torch'} <= set(ops.available_backends('cpu'))
    assert set(ops.backend_names()) >= {'reference', 'torch', 'triton'}
    q = torch.randn(1, 8, 2, 8)
    torch.testing.assert_close(ops.na1d(q, q, q, 3), ops.na1d(q, q, q, 3, backend='torch'))


# --- equivalences with the partition implementations of Swin / MaxViT ---

def _partition_attention(q, k, v, parts, bias=None, key_valid=None):
    """Attention inside groups given by ``parts`` (a function [B, H, W, ...] -> [B * n, tokens, ...])."""
    b, h, w, heads, d = q.shape
    qp, kp, vp = (parts(x).transpose(1, 2) for x in (q, k, v))  # [B * n, heads, T, d]
    logits = qp @ kp.transpose(-1, -2) * d ** -0.5
    if bias is not None:
        logits = logits + bias
    if key_valid is not None:
        logits = logits.masked_fill(~parts(key_valid)[:, None, None, :, 0, 0], float('-inf'))
    return (logits.softmax(-1) @ vp).transpose(1, 2)


def _swin_rel_bias(table, w):
    """Swin's bias[i, j] = table[q_i - k_j + w - 1] per axis for a w0 x w1 window: [heads, T, T]."""
    coords = torch.stack(torch.meshgrid(torch.arange(w[0]), torch.arange(w[1]), indexing='ij')).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    return table[:, rel[0] + w[0] - 1, rel[1] + w[1] - 1]


@pytest.mark.parametrize('padding', ['zeros', 'masked'])
def test_window_attention_equals_swin_partition(padding):
    torch.manual_seed(0)
    b, h, w, heads, d, win = 2, 10, 9, 2, 8, (4, 3)
    q, k, v = (torch.randn(b, h, w, heads, d, dtype=torch.float64) for _ in range(3))
    table = torch.randn(heads, 2 * win[0] - 1, 2 * win[1] - 1, dtype=torch.float64)
    out = ops.window_attention(q, k, v, win, rpb=table.flip(1, 2), padding=padding)
    hp, wp = 12, 9
    pad = (0, 0, 0, 0, 0, wp - w, 0, hp - h)
    qp, kp, vp = (F.pad(x, pad) for x in (q, k, v))
    valid = F.pad(torch.ones(b, h, w, 1, 1, dtype=torch.bool), pad)

    def parts(x):
        x = x.reshape(b, hp // win[0], win[0], wp // win[1], win[1], *x.shape[3:])
        return x.transpose(2, 3).reshape(-1, win[0] * win[1], *x.shape[5:])

    o = _partition_attention(qp, kp, vp, parts, _swin_rel_bias(table, win), valid if padding == 'masked' else None)
    o = o.reshape(b, hp // win[0], wp // win[1], win[0], win[1], heads, d).transpose(2, 3).reshape(b, hp, wp, heads, d)
    torch.testing.assert_close(out, o[:, :h, :w])


def test_partition_padding_defaults_to_masked():
    """The functional default is the correct padding (padded keys masked); 'zeros' is the unmasked quirk."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 5, 6, 2, 8, dtype=torch.float64) for _ in range(3))
    for fn in (ops.window_attention, ops.grid_attention):
        out = fn(q, k, v, 4)
        torch.testing.assert_close(out, fn(q, k, v, 4, padding='masked'))
        assert not torch.allclose(out, fn(q, k, v, 4, padding='zeros'))


def test_window_attention_clamp_is_natten_blocked():
    q = torch.randn(1, 10, 2, 8, dtype=torch.float64)
    out = ops.window_attention(q, q, q, 4, padding='clamp')
    torch.testing.assert_close(out, ops.na1d(q, q, q, 4, 4, backend='reference'))
    # queries 8-9 of the overlapping last block attend to keys 6-9
    torch.testing.assert_close(out[:, 8:], ops.na1d(q[:, 6:], q[:, 6:], q[:, 6:], 4)[:, 2:])


@pytest.mark.parametrize('padding', ['zeros', 'masked'])
def test_grid_attention_equals_maxvit_partition(padding):
    torch.manual_seed(1)
    b, h, w, heads, d, g = 1, 7, 8, 2, 8, (2, 4)
    q, k, v = (torch.randn(b, h, w, heads, d, dtype=torch.float64) for _ in range(3))
    table = torch.randn(heads, 2 * g[0] - 1, 2 * g[1] - 1, dtype=torch.float64)
    out = ops.grid_attention(q, k, v, g, rpb=table.flip(1, 2), padding=padding)
    hp, wp = 8, 8
    pad = (0, 0, 0, 0, 0, wp - w, 0, hp - h)
    qp, kp, vp = (F.pad(x, pad) for x in (q, k, v))
    valid = F.pad(torch.ones(b, h, w, 1, 1, dtype=torch.bool), pad)

    def parts(x):  # timm's grid_partition
        x = x.reshape(b, g[0], hp // g[0], g[1], wp // g[1], *x.shape[3:])
        return x.permute(0, 2, 4, 1, 3, *range(5, x.dim())).reshape(-1, g[0] * g[1], *x.shape[5:])

    o = _partition_attention(qp, kp, vp, parts, _swin_rel_bias(table, g), valid if padding == 'masked' else None)
    o = o.reshape(b, hp // g[0], wp // g[1], g[0], g[1], heads, d).permute(0, 3, 1, 4, 2, 5, 6)
    torch.testing.assert_close(out, o.reshape(b, hp, wp, heads, d)[:, :h, :w])


def test_pad_to_multiple():
    x = torch.randn(2, 5, 7, 3)
    y, sizes = ops.pad_to_multiple(x, (4, 3), dims=(1, 2))
    assert y.shape == (2, 8, 9, 3) and sizes == (5, 7)
    assert torch.equal(y[:, :5, :7], x) and y[:, 5:].abs().sum() == 0 and y[:, :, 7:].abs().sum() == 0
    assert ops.pad_to_multiple(x, 5, dims=(1,))[0] is x


def test_pad_same_equals_timm():
    """TF 'SAME' padding in integer form (exportable) equals timm's ``pad_same`` / ``get_same_padding``."""
    from timm.layers import get_same_padding, pad_same

    from ops._shape import same_padding
    for length, kernel, stride, dilation in [(n, k, s, d) for n in range(1, 12) for k in (1, 2, 3, 5)
                                             for s in (1, 2, 3) for d in (1, 2)]:
        total = get_same_padding(length, kernel, stride, dilation)
        assert same_padding(length, kernel, stride, dilation) == (total // 2, total - total // 2)
    x = torch.randn(2, 3, 7, 10)
    for kernel, stride in [(3, 2), (2, 2), (3, 1), (1, 3)]:
        assert torch.equal(ops.pad_same(x, kernel, stride), pad_same(x, (kernel, kernel), (stride, stride)))
    assert torch.equal(ops.pad_same(x, (3, 2), (2, 3), (1, 2)), pad_same(x, (3, 2), (2, 3), (1, 2)))  # per axis


@pytest.mark.parametrize('kwargs, message', [(dict(kernel_size=0, stride=2), 'kernel_size'),
                                             (dict(kernel_size=3, stride=(2, 2, 2)), 'stride'),
                                             (dict(kernel_size=3, stride=2, dilation=0), 'dilation')])
def test_pad_same_refuses_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.pad_same(torch.zeros(1, 1, 4, 4), **kwargs)


def test_size_pair_is_the_one_2d_size_check():
    """Every 2-d size argument (pad_same, region counts, agent grids, TF-'same' layers) goes through ops.size_pair."""
    assert ops.size_pair(3, 'k') == (3, 3) and ops.size_pair([2, 5], 'k') == (2, 5)
    assert ops.size_pair((np.int64(4), 1), 'k') == (4, 1) and type(ops.size_pair(np.int64(4), 'k')[0]) is int
    for bad in (0, True, 2.0, (1, 2, 3), (3, 0), '3'):
        with pytest.raises(ValueError, match=r"window must be an int >= 1 or two of them \(height, width\), got"):
            ops.size_pair(bad, 'window')


# --- merge_attentions ---

@pytest.mark.parametrize('backend', ['torch', 'reference'])
def test_merge_attentions_equals_joint_softmax(backend):
    """Neighborhood part + extra-token part merged through lse == one call with additional keys (and grads)."""
    case = CASES[7]
    inputs = make_inputs(case, torch.float64)
    leaves = {n: t.requires_grad_(True) for n, t in inputs.items() if t is not None}
    joint = run(backend, case, inputs, return_lse=False)
    part_a, lse_a = run(backend, case, {**inputs, 'additional_keys': None, 'additional_values': None})
    q, ak, av = inputs['query'], inputs['additional_keys'], inputs['additional_values']
    b, *s, h, d = q.shape
    logits = torch.einsum('bnhd,behd->bnhe', q.reshape(b, -1, h, d), ak) * d ** -0.5
    part_b = torch.einsum('bnhe,behd->bnhd', logits.softmax(-1), av).reshape(q.shape)
    lse_b = logits.logsumexp(-1).reshape(b, *s, h)
    merged, lse = ops.merge_attentions([part_a, part_b], [lse_a, lse_b])
    torch.testing.assert_close(merged, joint)
    g = torch.randn_like(joint)
    want = torch.autograd.grad(joint, list(leaves.values()), g)
    got = torch.autograd.grad(merged, list(leaves.values()), g)
    for a, b_ in zip(got, want):
        torch.testing.assert_close(a, b_)


def test_merge_attentions_handles_empty_parts():
    out = torch.randn(2, 3, 4)
    lse = torch.randn(2, 3)
    empty_lse = torch.full((2, 3), float('-inf'))
    merged, total = ops.merge_attentions([out, torch.zeros_like(out)], [lse, empty_lse])
    torch.testing.assert_close(merged, out)
    torch.testing.assert_close(total, lse)
    merged, total = ops.merge_attentions([out, out], [empty_lse, empty_lse])
    assert torch.equal(merged, torch.zeros_like(out)) and torch.isneginf(total).all()
    with pytest.raises(ValueError, match='as many outputs as lses'):
        ops.merge_attentions([out], [])
    with pytest.raises(ValueError, match='lses'):
        ops.merge_attentions([out], [lse[:, :2]])


# --- custom op / torch.compile / fvcore ---

def test_compile_fullgraph_no_recompile():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    m = ops.NeighborhoodAttention2D(16, 2, 3, dilation=(1, 2))
    cm = torch.compile(m, fullgraph=True, backend='aot_eager')  # exercises the fake kernels and autograd
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            x = torch.randn(1, 6, 7, 16, requires_grad=True)
            y = cm(x)
            y.sum().backward()
    torch.testing.assert_close(y, m(x))
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


def test_op_schema_and_fake_tensor():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(2, 5, 6, 3, 8)
        out, lse = ops.na2d(q, q, q, 3, return_lse=True)
    assert out.shape == q.shape and lse.shape == (2, 5, 6, 3) and lse.dtype == torch.float32


def test_fvcore_flop_count():
    from fvcore.nn import FlopCountAnalysis

    class Net(torch.nn.Module):
        def forward(self, q, ak):
            return ops.na2d(q, q, q, (3, 5), dilation=(2, 1), is_causal=(True, False), additional_keys=ak,
                            additional_values=ak)

    q, ak = torch.randn(2, 6, 7, 3, 8), torch.randn(2, 4, 3, 8)
    flops = FlopCountAnalysis(Net(), (q, ak))
    flops.unsupported_ops_warnings(False)
    causal_keys = sum(min(i // 2 + 1, 3) for i in range(6))  # dilation 2: group position i // 2, up to 3 keys
    pairs = causal_keys * 7 * 5 + 6 * 7 * 4
    assert flops.by_operator()['neighborhood_attention'] == 2 * 2 * 3 * 8 * pairs

    class Grid(torch.nn.Module):  # helpers and padding under jit tracing (fvcore traces sizes as tensors)
        def forward(self, q):
            return ops.grid_attention(q, q, q, 2)

    flops = FlopCountAnalysis(Grid(), (torch.randn(1, 5, 6, 2, 8),))
    assert flops.by_operator()['neighborhood_attention'] == 2 * 1 * 2 * 8 * (5 * 2) * (6 * 2)


# --- modules ---

def test_module_state_dict_and_natten_padding():
    torch.manual_seed(0)
    m = ops.NeighborhoodAttention2D(16, 2, 5, dilation=2).eval()
    assert [k for k in m.state_dict()] == ['rpb', 'qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias']
    assert m.rpb.shape == (2, 9, 9)
    assert ops.NeighborhoodAttention2D(16, 2, 5, bias=False).rpb is None
    assert ops.NeighborhoodAttention2D(16, 2, 5, rel_pos_bias=False).rpb is None
    x = torch.randn(2, 6, 12, 16)  # height 6 < kernel * dilation = 10: padded to 10 at the bottom
    y = m(x)
    assert y.shape == x.shape
    xp = F.pad(x, (0, 0, 0, 0, 0, 4))
    q, k, v = m.qkv(xp).reshape(2, 10, 12, 3, 2, 8).unbind(3)
    want = ops.na2d(q, k, v, 5, dilation=2, rpb=m.rpb, backend='reference')[:, :6]
    torch.testing.assert_close(y, m.proj(want.reshape(2, 6, 12, 16)))


@pytest.mark.parametrize('cls,shape', [(ops.NeighborhoodAttention1D, (2, 9, 8)),
                                       (ops.NeighborhoodAttention3D, (1, 3, 4, 5, 8))])
def test_module_1d_3d(cls, shape):
    m = cls(8, 2, 3)
    x = torch.randn(*shape, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert y.shape == x.shape and m.rpb.grad is not None and x.grad is not None


def test_module_attention_dropout():
    torch.manual_seed(0)
    m = ops.NeighborhoodAttention2D(16, 2, 3, attn_drop=.5)
    x = torch.randn(1, 6, 6, 16, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert x.grad is not None and m.rpb.grad is not None
    m.eval()
    assert torch.equal(m(x), m(x)) and not torch.allclose(y, m(x))
    m.train()
    m.backend = 'reference'
    with pytest.raises(RuntimeError, match='no attention dropout'):
        m(x)


def test_dropout_path_gradients_match_reference():
    """The autograd (dropout) path of the torch backend, at p -> 0 behaviour, equals the reference."""
    case = CASES[7]
    inputs = make_inputs(case, torch.float64)
    spec = make_spec(case.shape, case.kernel, case.stride, case.dilation, case.causal, case.valid)
    leaves = [inputs[n].requires_grad_(True) for n in ('query', 'key', 'value', 'rpb', 'additional_keys',
                                                       'additional_values')]
    out = torch_na._run(*leaves[:3], spec, .3, *leaves[3:])[0]
    ref, _ = reference.forward(*leaves[:3], spec, .3, *leaves[3:])
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(ref, leaves, g)):
        torch.testing.assert_close(a, b)


# --- bad input ---

def _q(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


BAD = [
    ('rank', lambda: ops.na2d(_q(1, 8, 2, 4), _q(1, 8, 2, 4), _q(1, 8, 2, 4), 3), ValueError, r'query must be \['),
    ('not tensor', lambda: ops.na1d([1.], _q(1, 8, 2, 4), _q(1, 8, 2, 4), 3), TypeError, 'query must be a torch'),
    ('int dtype', lambda: ops.na1d(*(torch.ones(1, 8, 2, 4, dtype=torch.long),) * 3, 3), TypeError,
     'floating-point'),
    ('shape mismatch', lambda: ops.na1d(_q(1, 8, 2, 4), _q(1, 9, 2, 4), _q(1, 8, 2, 4), 3), ValueError,
     'same shape'),
    ('dtype mismatch', lambda: ops.na1d(_q(1, 8, 2, 4), _q(1, 8, 2, 4, dtype=torch.float64), _q(1, 8, 2, 4), 3),
     TypeError, 'query, key, value must have one dtype outside autocast, got query: float32, key: float64'),
    ('kernel too large', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 5, dilation=2), ValueError, 'kernel_size'),
    ('stride > kernel', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, stride=4), ValueError, 'stride'),
    ('kernel < 1', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 0), ValueError, 'kernel_size'),
    ('kernel tuple length', lambda: ops.na2d(*(_q(1, 8, 8, 2, 4),) * 3, (3, 3, 3)), ValueError, 'kernel_size'),
    ('kernel float', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3.), TypeError, 'kernel_size'),
    ('causal int', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, is_causal=1), TypeError, 'is_causal'),
    ('rpb shape', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, rpb=_q(2, 3)), ValueError, 'rpb must have shape'),
    ('rpb dtype', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, rpb=torch.ones(2, 5, dtype=torch.long)), TypeError,
     'rpb'),
    ('extra alone', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, additional_keys=_q(1, 2, 2, 4)), ValueError,
     'together'),
    ('extra shape', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, additional_keys=_q(1, 2, 3, 4),
                                     additional_values=_q(1, 2, 3, 4)), ValueError, 'additional_keys must be'),
    ('extra dtype', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, additional_keys=_q(1, 2, 2, 4, dtype=torch.float64),
                                     additional_values=_q(1, 2, 2, 4)), TypeError, 'additional_keys: float64'),
    ('valid shape', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, valid_shape=(9,)), ValueError, 'valid_shape'),
    ('unknown backend', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, backend='cuda'), ValueError, 'backend must be'),
    ('triton on cpu', lambda: ops.na1d(*(_q(1, 8, 2, 8),) * 3, 3, backend='triton'), RuntimeError, "backend='triton'"),
    ('scale', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, scale='x'), TypeError, 'scale'),
    ('dropout', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, dropout_p=1.), ValueError, 'dropout_p'),
    ('dropout lse', lambda: ops.na1d(*(_q(1, 8, 2, 4),) * 3, 3, dropout_p=.1, return_lse=True), ValueError,
     'return_lse'),
    ('empty', lambda: ops.na1d(*(_q(0, 8, 2, 4),) * 3, 3), ValueError, 'empty'),
    ('window padding', lambda: ops.window_attention(*(_q(1, 8, 2, 4),) * 3, 4, padding='reflect'), ValueError,
     'padding'),
    ('window tokens', lambda: ops.window_attention(*(_q(1, 8, 2, 4),) * 3, 4, padding='tokens'), ValueError,
     r"WindowAttention2D\(padding='tokens'\)"),
    ('grid clamp', lambda: ops.grid_attention(*(_q(1, 8, 2, 4),) * 3, 4, padding='clamp'), ValueError, 'grid'),
    ('module rank', lambda: ops.NeighborhoodAttention2D(8, 2, 3)(_q(1, 8, 8)), ValueError, 'expects'),
    ('module heads', lambda: ops.NeighborhoodAttention2D(8, 3, 3), ValueError, 'num_heads'),
]


def test_named_backend_rejects_head_dim_it_cannot_take(monkeypatch):
    """triton (as if under the interpreter) refuses head_dim 12 with a clear error instead of falling back."""
    pytest.importorskip('triton')
    from ops.na.backends import triton_na  # imported before TRITON_INTERPRET is set, so this worker's kernels stay
    # compilable for test_triton_kernels_compile_for_gpu
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.setattr(triton_na, '_INTERPRET', True)
    q = _q(1, 8, 2, 12)
    with pytest.raises(ValueError, match="backend='triton'.*head_dim"):
        ops.na1d(q, q, q, 3, backend='triton')


@pytest.mark.parametrize('name,fn,exc,match', BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, fn, exc, match, monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    with pytest.raises(exc, match=match):
        fn()


def test_checked_calls_are_cached_but_bad_input_still_raises(monkeypatch):
    """A repeated valid call skips the checks (one keyed lookup); arguments equal to cached ones but of another type
    (True == 1, 3.0 == 3, False == 0.0) or unhashable are still checked, with the same errors."""
    from ops.na import api
    q = _q(1, 8, 2, 4)
    ops.na1d(q, q, q, 3, dropout_p=0.0)
    calls = []
    original = api.make_spec
    monkeypatch.setattr(api, 'make_spec', lambda *a: calls.append(a) or original(*a))
    ops.na1d(_q(1, 8, 2, 4), _q(1, 8, 2, 4), _q(1, 8, 2, 4), 3, dropout_p=0.0)
    assert calls == []
    for kwargs, exc, match in ((dict(kernel_size=3.), TypeError, 'kernel_size'),
                               (dict(kernel_size=3, is_causal=1), TypeError, 'is_causal'),
                               (dict(kernel_size=3, dropout_p=False), ValueError, 'dropout_p'),
                               (dict(kernel_size=[9]), ValueError, 'kernel_size')):
        with pytest.raises(exc, match=match):
            ops.na1d(q, q, q, **kwargs)
    ops.na1d(q, q, q, [3])  # a list: checked (no key), and fine
    assert len(calls) == 5


def test_benchmark_script_smoke(tmp_path):
    """benchmarks/ops.py runs end to end on a tiny problem and writes its JSON / markdown / plot."""
    script = Path(__file__).resolve().parents[1] / 'benchmarks' / 'ops.py'
    subprocess.run([sys.executable, str(script), '--device', 'cpu', '--reps', '1', '--threads', '1', '--filter',
                    'scale_16x16', '--out-dir', str(tmp_path)], check=True, capture_output=True, timeout=300)
    rows = json.loads((tmp_path / 'ops.json').read_text())['rows']
    assert {r['peer'] for r in rows} == {'torch', 'sdpa_dense', 'sdpa_bias', 'sdpa_masked', 'unfused'}
    assert all(r['fwd_ms'] > 0 and r['fwd_bwd_ms'] > 0 for r in rows)
    assert (tmp_path / 'ops.md').stat().st_size and (tmp_path / 'ops.png').stat().st_size


def test_rows_without_keys_send_no_nan_into_gradients():
    """A query that sees no key (valid_shape) must not poison other keys' gradients: dropout path and merges."""
    q, k, v = (torch.randn(1, 12, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = ops.na1d(q, k, v, 3, valid_shape=[4], dropout_p=0.1, backend='torch')
    out[:, :4].sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    for t in (q, k, v):
        t.grad = None
    parts = [ops.na1d(q, k, v, 3, valid_shape=[4], return_lse=True) for _ in range(2)]
    merged, lse = ops.merge_attentions([p[0] for p in parts], [p[1] for p in parts])
    assert torch.isneginf(lse[:, 5:]).all()  # queries 5.. (windows [4, 6] and on) only see padded keys
    merged.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_reference_differentiated_directly_sends_no_nan_from_rows_without_keys():
    """Tests differentiate the reference's forward through autograd; key-less rows must not poison it."""
    q, k, v = (torch.randn(1, 12, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, lse = reference.forward(q, k, v, make_spec((12,), 3, valid_shape=[4]), 0.3)
    assert torch.isneginf(lse[:, 6:]).all() and (out[:, 6:] == 0).all()
    (out[:, :4].sum() + lse[:, :4].sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_helper_argument_checks():
    x = torch.randn(2, 5, 5)
    with pytest.raises(ValueError, match='out of range'):
        ops.pad_to_multiple(x, 4, [3])
    from ops.na.api import neighborhood_attention
    with pytest.raises(ValueError, match='ndim must be 1, 2 or 3'):
        neighborhood_attention(4, x, x, x, 3)
