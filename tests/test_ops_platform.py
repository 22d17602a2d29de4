"""The ops platform every op family stands on: backend registry and dispatch, the autocast rule, dynamic-shape
compilation, custom-op contracts (opcheck), and gradients computed only when needed."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the zoo models)
import ops
from ops import _registry, _triton
from ops.na.backends import reference, torch_na
from ops.na.custom_op import spec_args
from ops.na.pattern import make_spec

# --- registry and dispatch ---


@pytest.fixture
def fake_cuda_triton(monkeypatch):
    """Pretend a CUDA GPU and a current Triton are present; triton's check_inputs accepts CPU tensors (nothing is
    launched by resolve_backend)."""
    pytest.importorskip('triton')
    from ops.na.backends import triton_na  # imported before TRITON_INTERPRET could be set (compile tests)
    monkeypatch.setattr(_triton, '_LIBRARY_REASON', None)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(triton_na, '_INTERPRET', True)
    return torch.device('cuda')


def _args(dtype=torch.float16, head_dim=16, rpb=False):
    q = torch.randn(1, 8, 9, 2, head_dim, dtype=dtype)
    spec = make_spec((8, 9), 3)
    table = torch.randn(2, 5, 5, dtype=dtype) if rpb else None
    return (q, q, q, spec, table, None, None)


def test_dispatch_on_cuda_prefers_triton_and_falls_back_by_capability(fake_cuda_triton):
    cuda = fake_cuda_triton
    assert _registry.resolve_backend('na', None, cuda, torch.float16, check_args=_args()) == 'triton'
    assert _registry.resolve_backend('na', None, cuda, torch.bfloat16, check_args=_args(torch.bfloat16)) == 'triton'
    # head_dim 12 is not a multiple of 8: triton's check_inputs declines, torch serves
    assert _registry.resolve_backend('na', None, cuda, torch.float16, check_args=_args(head_dim=12)) == 'torch'
    # float64 is outside triton's declared dtypes
    assert _registry.resolve_backend('na', None, cuda, torch.float64, check_args=_args(torch.float64)) == 'torch'
    # a named backend is validated, never replaced
    with pytest.raises(ValueError, match="backend='triton' cannot serve this na call.*head_dim"):
        _registry.resolve_backend('na', 'triton', cuda, torch.float16, check_args=_args(head_dim=12))
    assert ops.available_backends('cuda') == ['triton', 'torch', 'reference']


def test_dropout_moves_off_a_backend_without_it_and_warns_once(fake_cuda_triton, monkeypatch):
    cuda = fake_cuda_triton
    entry = _registry.get_backend('na', 'triton')
    if entry.dropout:  # the fused kernels implement dropout: the call stays there
        assert _registry.resolve_backend('na', None, cuda, torch.float16, True, _args()) == 'triton'
        return
    _registry._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match=r"dropout.*\['triton'\].*'torch'"):
        assert _registry.resolve_backend('na', None, cuda, torch.float16, True, _args()) == 'torch'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _registry.resolve_backend('na', None, cuda, torch.float16, True, _args()) == 'torch'


def test_without_cuda_or_new_triton_the_triton_backend_reports_why(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    reason = _registry.get_backend('na', 'triton').unavailable_reason(torch.device('cpu'))
    assert 'CUDA' in reason or 'triton' in reason
    monkeypatch.setattr(_triton, '_LIBRARY_REASON', 'triton 3.1.0 is too old for these kernels')
    assert _registry.get_backend('na', 'triton').unavailable_reason(torch.device('cuda')) == \
        'triton 3.1.0 is too old for these kernels'
    assert 'triton' not in ops.available_backends('cuda')


def test_registry_orders_by_priority_and_honours_capabilities(monkeypatch):
    monkeypatch.setattr(_registry, '_REGISTRY', dict(_registry._REGISTRY))
    # a fake op family: 'fast' (highest priority, CUDA only, no determinism), 'slow' (anywhere), an oracle
    impl = reference
    _registry.register_backend(_registry.Backend('fake', 'oracle', impl.forward, auto=False))
    _registry.register_backend(_registry.Backend('fake', 'slow', impl.forward, priority=1))
    _registry.register_backend(_registry.Backend('fake', 'fast', impl.forward, priority=5, devices=('cuda',),
                                                 deterministic=False, dtypes=(torch.float16,)))
    assert _registry.backend_names('fake') == ['fast', 'slow', 'oracle']
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert _registry.resolve_backend('fake', None, cpu, torch.float16) == 'slow'
    assert _registry.resolve_backend('fake', None, cuda, torch.float16) == 'fast'
    assert _registry.resolve_backend('fake', None, cuda, torch.float32) == 'slow'
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert _registry.resolve_backend('fake', None, cuda, torch.float16) == 'slow'
        with pytest.raises(RuntimeError, match='not deterministic'):
            _registry.resolve_backend('fake', 'fast', cuda, torch.float16)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert _registry.resolve_backend('fake', 'oracle', cpu, torch.float64) == 'oracle'
    with pytest.raises(ValueError, match=r"one of \['fast', 'slow', 'oracle'\]"):
        _registry.resolve_backend('fake', 'nope', cpu, torch.float32)
    with pytest.raises(ValueError, match='unknown op'):
        _registry.backend_names('nope')


# --- autocast and dtypes ---


def test_autocast_casts_mixed_inputs_like_sdpa():
    """q after a LayerNorm is fp32 while k/v are bf16: fine under autocast (computed in bf16, gradients in each
    input's dtype), an error naming the arguments outside it."""
    q = torch.randn(1, 7, 8, 2, 16, requires_grad=True)
    k, v = (torch.randn(1, 7, 8, 2, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    rpb = torch.randn(2, 5, 5, requires_grad=True)
    with pytest.raises(TypeError, match='query, key, value, rpb must have one dtype outside autocast'):
        ops.na2d(q, k, v, 3, rpb=rpb)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ops.na2d(q, k, v, 3, rpb=rpb)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert (q.grad.dtype, k.grad.dtype, v.grad.dtype, rpb.grad.dtype) == (torch.float32, torch.bfloat16,
                                                                            torch.bfloat16, torch.float32)
    cast = [t.detach().to(torch.bfloat16) for t in (q, k, v, rpb)]
    torch.testing.assert_close(out, ops.na2d(*cast[:3], 3, rpb=cast[3]))


def test_autocast_rule_is_registered_on_the_custom_op():
    """Called directly (no Python wrapper), the op still follows autocast: the rule lives on its dispatch key."""
    q = torch.randn(1, 6, 6, 2, 8)
    spec = make_spec((6, 6), 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, lse = torch.ops.attnzoo.na_forward(q, q, q, *spec_args(spec), 0.5, None, None, None, 'torch')
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    with torch.autocast('cpu', dtype=torch.float16):
        assert torch.ops.attnzoo.na_forward(q, q, q, *spec_args(spec), 0.5, None, None, None,
                                            'torch')[0].dtype == torch.float16
    assert torch.ops.attnzoo.na_forward(q.double(), q.double(), q.double(), *spec_args(spec), 0.5, None, None, None,
                                        'torch')[0].dtype == torch.float64


def test_autocast_holds_compiled():
    m = ops.NeighborhoodAttention2D(16, 2, 3)
    cm = torch.compile(m, backend='aot_eager', fullgraph=True)
    x = torch.randn(1, 7, 7, 16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = cm(x)
        ref = m(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref)


def test_zoo_model_under_cpu_bf16_autocast_matches_fp32():
    torch.manual_seed(0)
    model = timm.create_model('nat_mini', num_classes=10, drop_path_rate=0.)
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 7])

    def loss_and_grads():
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).float(), target)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss32, grads32 = loss_and_grads()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss16, grads16 = loss_and_grads()
    assert abs(loss16 - loss32) < 0.02 * max(1, abs(loss32))
    assert all(g.dtype == torch.float32 for g in grads16.values())
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[n].flatten() for n in grads32])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, 0) > 0.99
    assert (flat16 - flat32).norm() < 0.1 * flat32.norm()


# --- torch.compile with dynamic shapes ---


class _Mixed(torch.nn.Module):
    """Window, grid (zero-padded, masked), Swin (token-padded, shifted) and neighborhood attention: every
    padding/crop path of the NA family."""

    def __init__(self, swin: bool = True):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.swin = ops.WindowAttention2D(16, 2, 4, shift_size=2) if swin else None
        self.na = ops.NeighborhoodAttention2D(16, 2, 3, dilation=(1, 2))

    def forward(self, x):
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).reshape(b, h, w, 3, 2, 8).unbind(3)
        x = x + ops.window_attention(q, k, v, 4, padding='zeros').reshape(b, h, w, c)
        x = x + ops.grid_attention(q, k, v, 2).reshape(b, h, w, c)
        return self.na(x if self.swin is None else x + self.swin(x))


@pytest.mark.parametrize('backend,swin', [('inductor', False), ('aot_eager', True)])
def test_dynamic_compile_takes_new_resolutions_without_recompiling(backend, swin):
    """dynamic=True: three resolutions (padded and unpadded windows, odd grids) share one graph (inductor on the
    op paths; the Swin module's slabs under aot_eager, which traces the same guards at a fraction of the cost)."""
    torch.manual_seed(0)
    m = _Mixed(swin)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cm = torch.compile(m, backend=backend, dynamic=True, fullgraph=True)
    for hw in ((6, 7), (9, 12), (16, 13)):  # 16 and 12 divide the windows, 6, 7, 9 and 13 do not
        x = torch.randn(2, *hw, 16, requires_grad=True)
        y = cm(x)
        y.sum().backward()
        grad = x.grad
        x.grad = None
        ref = m(x)
        ref.sum().backward()
        torch.testing.assert_close(y, ref)
        torch.testing.assert_close(grad, x.grad)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


def test_automatic_dynamic_recompiles_at_most_once():
    """Default compile (no dynamic=): the second resolution turns the graph dynamic; no later recompile."""
    m = _Mixed()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cm = torch.compile(m, backend='aot_eager', fullgraph=True)
    for hw in ((6, 7), (9, 12), (16, 13), (8, 8)):
        cm(torch.randn(1, *hw, 16)).sum()
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] <= 2


def test_crop_is_a_view_in_eager_and_a_fresh_tensor_compiled():
    x = torch.randn(2, 9, 10, 3)
    padded, sizes = ops.pad_to_multiple(x, 4, (1, 2))
    assert padded.shape == (2, 12, 12, 3) and sizes == (9, 10)
    out = ops.crop(padded, sizes, (1, 2))
    assert torch.equal(out, x) and out.data_ptr() == padded.data_ptr()
    assert ops.pad_to_multiple(x, (3, 5), (1, 2))[0] is x  # nothing to pad: no copy
    with pytest.raises(ValueError, match='one size per dim'):
        ops.crop(x, (3,), (1, 2))


# --- custom-op contracts ---


def test_opcheck_na_forward_and_backward():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 6, 7, 2, 8, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, requires_grad=True)
    ak, av = (torch.randn(1, 3, 2, 8, requires_grad=True) for _ in range(2))
    spec = make_spec((6, 7), 3, (1, 2), 1, (False, True), (5, 6))
    args = (q, k, v, *spec_args(spec), 0.3, rpb, ak, av, 'torch')
    torch.library.opcheck(torch.ops.attnzoo.na_forward.default, args)
    torch.library.opcheck(torch.ops.attnzoo.na_forward.default, (q, k, v, *spec_args(make_spec((6, 7), 3)), 0.3,
                                                                 None, None, None, 'torch'))
    out, lse = torch.ops.attnzoo.na_forward(*args)
    detached = [t.detach() for t in (q, k, v, out, lse)]
    for need in ((True, True), (False, False)):
        torch.library.opcheck(torch.ops.attnzoo.na_backward.default,
                              (torch.randn_like(out), torch.randn_like(lse), *detached, *spec_args(spec), 0.3,
                               rpb.detach(), ak.detach(), av.detach(), 'torch', *need))


def test_opcheck_crop():
    torch.library.opcheck(torch.ops.attnzoo.crop.default, (torch.randn(2, 8, 9, 3, requires_grad=True), [1, 2],
                                                           [5, 7]))


# --- gradients only when needed ---


@pytest.mark.parametrize('backend', ['torch', 'reference'])
def test_bias_and_extra_gradients_are_computed_only_when_needed(backend, monkeypatch):
    entry = _registry.get_backend('na', backend)
    seen = []
    original = entry.backward

    def spy(*args, **kwargs):
        seen.append((kwargs['need_rpb'], kwargs['need_extra']))
        return original(*args, **kwargs)

    monkeypatch.setitem(_registry._REGISTRY, ('na', backend), dataclasses.replace(entry, backward=spy))
    q = torch.randn(1, 8, 8, 2, 8, requires_grad=True)
    rpb = torch.randn(2, 5, 5)
    ak = torch.randn(1, 2, 2, 8)
    ops.na2d(q, q, q, 3, rpb=rpb, additional_keys=ak, additional_values=ak, backend=backend).sum().backward()
    rpb.requires_grad_(True)
    ak.requires_grad_(True)
    out = ops.na2d(q, q, q, 3, rpb=rpb, additional_keys=ak, additional_values=ak, backend=backend)
    out.sum().backward()
    assert seen == [(False, False), (True, True)]
    assert rpb.grad is not None and ak.grad is not None


def test_extra_tokens_still_reach_dq_when_their_gradient_is_not_needed():
    torch.manual_seed(0)
    q = torch.randn(1, 10, 2, 8, dtype=torch.float64, requires_grad=True)
    ak = torch.randn(1, 3, 2, 8, dtype=torch.float64)
    g = torch.randn(1, 10, 2, 8, dtype=torch.float64)
    dq = torch.autograd.grad(ops.na1d(q, q, q, 3, additional_keys=ak, additional_values=ak), q, g)[0]
    dq_ref = torch.autograd.grad(ops.na1d(q, q, q, 3, additional_keys=ak, additional_values=ak,
                                          backend='reference'), q, g)[0]
    torch.testing.assert_close(dq, dq_ref)


# --- attention dropout ---


def test_dropout_path_matches_the_reference_with_the_same_mask():
    """At p > 0: recover the kept-weight matrix with one-hot values, then the output and every gradient equal
    the dense formula with that mask (so the dropout path cannot silently drop the wrong entries)."""
    n, p, scale = 12, 0.4, 0.3
    spec = make_spec((n,), 5)
    torch.manual_seed(0)
    q, k = (torch.randn(1, n, 2, n, dtype=torch.float64) for _ in range(2))
    rpb = torch.randn(2, 9, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64)[None, :, None, :].expand(1, n, 2, n).contiguous()
    torch.manual_seed(1)
    kept = torch_na.forward_with_dropout(q, k, eye, spec, scale, rpb, None, None, p)  # [1, n(q), 2, n(k)]
    probs = torch.exp(reference._logits(q, k, eye, spec, scale, rpb, None, None)[0]
                      - reference.forward(q, k, eye, spec, scale, rpb)[1].permute(0, 2, 1)[..., None])
    mask = kept.permute(0, 2, 1, 3) / probs.clamp_min(1e-300)  # [1, 2, n, n]: 0 or 1 / (1 - p) on the window
    window = probs > 0
    assert ((mask[window] - 1 / (1 - p)).abs() < 1e-9).logical_or(mask[window].abs() < 1e-9).all()
    assert 0 < (mask[window] == 0).double().mean() < 1

    leaves = [t.clone().requires_grad_(True) for t in (q, k, torch.randn_like(q), rpb)]
    torch.manual_seed(1)
    out = torch_na.forward_with_dropout(*leaves[:3], spec, scale, leaves[3], None, None, p)
    logits = reference._logits(*leaves[:3], spec, scale, leaves[3], None, None)[0]
    dense = (torch.softmax(logits, -1) * mask) @ leaves[2].transpose(1, 2)
    ref = dense.transpose(1, 2)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(ref, leaves, g)):
        torch.testing.assert_close(a, b)


def test_ops_and_modules_on_the_meta_device():
    """Shape inference without memory (timm builds big models on meta): ops run, modules take factory kwargs."""
    q, k = torch.empty(2, 10, 3, 8, device='meta'), torch.empty(2, 4, 3, 8, device='meta')
    assert ops.dense_attention(q, k, k, return_lse=True)[1].shape == (2, 10, 3)
    assert ops.na1d(q, q, q, 3).shape == q.shape
    for module in (ops.NeighborhoodAttention2D(16, 2, 3, device='meta', dtype=torch.float64),
                   ops.WindowAttention2D(16, 2, 4, device='meta', dtype=torch.float64)):
        assert {(p.device.type, p.dtype) for p in module.parameters()} == {('meta', torch.float64)}
        assert module(torch.empty(1, 9, 10, 16, device='meta', dtype=torch.float64)).shape == (1, 9, 10, 16)
