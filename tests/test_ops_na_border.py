"""ops.na: the centred, border-masked window (``border='mask'``) and the neighbourhood weighted sum ``na_av``,
against the reference and against TransNeXt's zero-padded ``unfold`` formulation (forward and gradients)."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from _na_cases import BORDER_CASES, Case, check_against_reference, make_inputs, random_case, run

import ops
from ops.na.backends import triton_na
from ops.na.pattern import axis_window, make_spec


def _unfold(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, H, W, heads, d]`` -> zero-padded 3x3-style neighbourhoods ``[B, heads, H*W, k*k, d]`` (TransNeXt)."""
    b, h, w, nh, d = x.shape
    u = F.unfold(x.permute(0, 3, 4, 1, 2).reshape(b, nh * d, h, w), k, padding=k // 2)
    return u.view(b, nh, d, k * k, h * w).permute(0, 1, 4, 3, 2)


def _border_mask(h: int, w: int, k: int) -> torch.Tensor:
    """``[H*W, k*k]`` True where the slot lies outside the map (TransNeXt's padding_mask)."""
    return F.unfold(torch.ones(1, 1, h, w, dtype=torch.float64), k, padding=k // 2)[0].t() == 0


@pytest.mark.parametrize('case', BORDER_CASES, ids=str)
def test_border_mask_torch_matches_reference(case):
    check_against_reference('torch', case, torch.float32)


def test_border_mask_random_sweep_and_lse_gradient():
    rng = random.Random(77)
    for i in range(60):
        check_against_reference('torch', random_case(rng, border='mask'), torch.float64, seed=i, grad_lse=i % 2 == 0)


def test_border_mask_gradcheck_reference():
    case = Case((4, 5), (3, 3), rpb=True, extra=2, batch=1, heads=2, head_dim=4, border='mask')
    inputs = make_inputs(case, torch.float64)
    names = [n for n, t in inputs.items() if t is not None]

    def fn(*tensors):
        return run('reference', case, {**inputs, **dict(zip(names, tensors))})

    assert torch.autograd.gradcheck(fn, [inputs[n].requires_grad_(True) for n in names], atol=1e-6)


@pytest.mark.parametrize('shape', [(7, 9), (1, 4), (5, 5)])
def test_border_mask_equals_unfold_attention(shape):
    """The reference and torch backends equal attention over F.unfold's zero-padded, masked 3x3 window."""
    torch.manual_seed(0)
    b, nh, d, k = 2, 2, 8, 3
    q, key, v = (torch.randn(b, *shape, nh, d, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(nh, k * k, dtype=torch.float64)  # one bias per window slot (relative_pos_bias_local)
    rpb = F.pad(bias.view(nh, k, k), (k // 2,) * 4)  # slot offset o sits at table index o + k - 1
    qf = q.reshape(b, -1, nh, d).transpose(1, 2)
    logits = torch.einsum('bhnd,bhnjd->bhnj', qf, _unfold(key, k)) * d ** -0.5 + bias[:, None]
    logits = logits.masked_fill(_border_mask(*shape, k), float('-inf'))
    want = torch.einsum('bhnj,bhnjd->bhnd', logits.softmax(-1), _unfold(v, k)).transpose(1, 2).reshape(q.shape)
    for backend in ('reference', 'torch'):
        got = ops.na2d(q, key, v, k, rpb=rpb, border='mask', backend=backend)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_border_mask_window_counts():
    first, count = axis_window(5, 3, 1, 1, False, border='mask')
    assert first.tolist() == [0, 0, 1, 2, 3] and count.tolist() == [2, 3, 3, 3, 2]
    first, count = axis_window(2, 5, 1, 1, False, border='mask')  # kernel longer than the axis
    assert first.tolist() == [0, 0] and count.tolist() == [2, 2]
    with pytest.raises(ValueError, match='border must be one of'):
        make_spec((5, 5), 3, border='zero')
    with pytest.raises(ValueError, match='border="mask"'):
        make_spec((2, 5), 3)


def test_triton_declines_border_mask_and_dispatch_falls_back():
    q = torch.randn(1, 6, 6, 2, 8)
    with pytest.raises(ValueError, match="border='clamp'"):
        triton_na.check_inputs(q, q, q, make_spec((6, 6), 3, border='mask'))
    torch.testing.assert_close(ops.na2d(q, q, q, 3, border='mask'), ops.na2d(q, q, q, 3, border='mask',
                                                                               backend='torch'))


def test_border_mask_flops_count_only_valid_pairs():
    from fvcore.nn import FlopCountAnalysis

    class Net(torch.nn.Module):
        def forward(self, q):
            return ops.na2d(q, q, q, 3, border='mask')

    flops = FlopCountAnalysis(Net(), (torch.randn(1, 5, 6, 2, 8),))
    assert flops.by_operator()['neighborhood_attention'] == 2 * 2 * 8 * (13 * 16)  # (3*5-2) x (3*6-2) pairs


# --- the neighbourhood weighted sum ---

AV_CASES = [
    ((7, 9), 3, 1, 1, False, 'mask'),
    ((7, 9), 3, 1, 1, False, 'clamp'),
    ((11,), 4, 2, 2, False, 'mask'),
    ((10,), 3, 1, 1, True, 'mask'),
    ((6, 5), (3, 5), (1, 2), (2, 1), (False, True), 'clamp'),
    ((2, 3), 3, 1, 1, False, 'mask'),  # kernel > length
    ((4, 5, 3), 3, 1, (1, 1, 2), False, 'mask'),
]


def _av_inputs(shape, kernel, dtype=torch.float64, heads=2, dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    slots = math.prod(kernel if isinstance(kernel, tuple) else (kernel,) * len(shape))
    w = torch.randn(2, *shape, heads, slots, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(True)
    v = torch.randn(2, *shape, heads, dim, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(True)
    return w, v


@pytest.mark.parametrize('case', AV_CASES, ids=str)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_na_av_torch_matches_reference(case, dtype):
    shape, kernel, stride, dilation, causal, border = case
    w, v = _av_inputs(shape, kernel, dtype)
    wr, vr = (t.detach().double().requires_grad_(True) for t in (w, v))
    got = ops.na_av(w, v, kernel, stride, dilation, causal, border)
    want = ops.na_av(wr, vr, kernel, stride, dilation, causal, border, backend='reference')
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=0)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, (w, v), g.to(dtype)), torch.autograd.grad(want, (wr, vr), g)):
        torch.testing.assert_close(a.double(), b, atol=tol * 10, rtol=0)


def test_na_av_reference_gradcheck_and_unfold_oracle():
    w, v = _av_inputs((4, 5), 3)
    assert torch.autograd.gradcheck(lambda a, b: ops.na_av(a, b, 3, border='mask', backend='reference'), (w, v))
    assert torch.autograd.gradcheck(lambda a, b: ops.na_av(a, b, 3, border='mask'), (w, v))
    want = torch.einsum('bhnj,bhnjd->bhnd', w.reshape(2, 20, 2, 9).transpose(1, 2), _unfold(v, 3))
    want = want.transpose(1, 2).reshape(v.shape)
    torch.testing.assert_close(ops.na_av(w, v, 3, border='mask'), want, atol=1e-12, rtol=0)
    # weights on slots outside the map change nothing and get no gradient
    dw, = torch.autograd.grad(ops.na_av(w, v, 3, border='mask').sum(), w)
    assert (dw.reshape(2, 20, 2, 9).transpose(1, 2)[..., _border_mask(4, 5, 3)] == 0).all()


def test_na_av_compile_fullgraph_opcheck_and_flops():
    from fvcore.nn import FlopCountAnalysis
    w, v = _av_inputs((5, 6), 3, torch.float32)
    args = (w, v, [3, 3], [1, 1], [1, 1], [0, 0], 'mask', 'torch')
    torch.library.opcheck(torch.ops.attnzoo.na_av_forward.default, args)
    torch.library.opcheck(torch.ops.attnzoo.na_av_backward.default,
                          (torch.randn_like(v), w.detach(), v.detach(), *args[2:]))
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b: ops.na_av(a, b, 3, border='mask'), fullgraph=True, backend='aot_eager')
    out = fn(w, v)
    out.sum().backward()
    torch.testing.assert_close(out, ops.na_av(w, v, 3, border='mask'))

    class Net(torch.nn.Module):
        def forward(self, a, b):
            return ops.na_av(a, b, 3, border='mask')

    flops = FlopCountAnalysis(Net(), (w.detach(), v.detach()))
    assert flops.by_operator()['neighborhood_weighted_sum'] == 2 * 2 * 5 * (13 * 16)


def test_na_av_autocast_and_bad_input():
    w, v = _av_inputs((5, 6), 3, torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ops.na_av(w, v.detach().bfloat16(), 3, border='mask')
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ops.na_av(w.bfloat16().float(), v.bfloat16().float(), 3, border='mask'),
                               atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match=r'weights must be \(2, 5, 6, 2, 9\)'):
        ops.na_av(w[..., :4], v, 3)
    with pytest.raises(TypeError, match='one dtype'):
        ops.na_av(w.double(), v, 3)
    with pytest.raises(ValueError, match='border must be one of'):
        ops.na_av(w, v, 3, border='pad')


def test_na_av_shift_shortcut_equals_the_general_slot_loop(monkeypatch):
    """The constant-shift shortcut (centred, masked, stride 1, dilation 1) and the gather loop agree."""
    from ops.na.backends import av_torch
    w, v = _av_inputs((6, 7), (3, 5))
    g = torch.randn(v.shape, dtype=torch.float64)
    fast = ops.na_av(w, v, (3, 5), border='mask')
    fast_grads = torch.autograd.grad(fast, (w, v), g)
    monkeypatch.setattr(av_torch, '_shifts', lambda spec: False)
    slow = ops.na_av(w, v, (3, 5), border='mask')
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=0)
    for a, b in zip(fast_grads, torch.autograd.grad(slow, (w, v), g)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
