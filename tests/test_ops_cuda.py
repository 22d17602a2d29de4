"""CUDA-only checks beyond the triton kernels' own (tests/test_ops_triton.py): the torch backend on CUDA, automatic
dispatch, autocast, torch.compile, the partition helpers and whole zoo models on the GPU, each against the
reference or the CPU float32 result. All marked ``cuda``: they skip without CUDA (``pytest -m cuda`` runs them;
benchmarks/gpu_suite.sh does on a GPU machine).
"""
from __future__ import annotations

import pytest
import torch
from _na_cases import BORDER_CASES, CASES, check_against_reference

import ops

pytestmark = pytest.mark.cuda
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('case', CASES, ids=str)
def test_torch_backend_cuda_matches_reference(case, dtype):
    check_against_reference('torch', case, dtype, device='cuda', grad_lse=True)


@pytest.mark.parametrize('case', BORDER_CASES, ids=str)
def test_border_mask_on_cuda_runs_torch_and_matches_reference(case):
    """triton declines border='mask'; automatic dispatch serves it with the torch backend on CUDA."""
    check_against_reference('torch', case, torch.float32, device='cuda', grad_lse=True)
    q = torch.randn(1, 9, 7, 2, 16, device='cuda')
    torch.testing.assert_close(ops.na2d(q, q, q, 3, border='mask'), ops.na2d(q, q, q, 3, border='mask',
                                                                               backend='torch'), atol=0, rtol=0)


def test_na_av_on_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    w, v = torch.randn(2, 9, 7, 2, 9, generator=gen), torch.randn(2, 9, 7, 2, 16, generator=gen)
    for border in ('mask', 'clamp'):
        torch.testing.assert_close(ops.na_av(w.cuda(), v.cuda(), 3, border=border).cpu(),
                                   ops.na_av(w, v, 3, border=border), atol=1e-5, rtol=1e-5)


def test_automatic_dispatch_prefers_triton_on_cuda():
    assert ops.available_backends('cuda')[0] == 'triton'
    q = torch.randn(1, 9, 9, 2, 16, device='cuda', dtype=torch.bfloat16)
    torch.testing.assert_close(ops.na2d(q, q, q, 5), ops.na2d(q, q, q, 5, backend='triton'), atol=0, rtol=0)


@pytest.mark.parametrize('backend', ['triton', 'torch'])
def test_autocast_bf16_on_cuda(backend):
    """fp32 inputs under autocast run in bf16 and return bf16 (the autocast rule), close to the fp32 result."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 12, 10, 2, 32, generator=gen).cuda() for _ in range(3))
    rpb = torch.randn(2, 13, 13, generator=gen).cuda()
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = ops.na2d(q, k, v, 7, dilation=(1, 1), rpb=rpb, backend=backend)
    assert out.dtype == torch.bfloat16
    ref = ops.na2d(q.cpu().double(), k.cpu().double(), v.cpu().double(), 7, rpb=rpb.cpu().double(),
                   backend='reference')
    assert _rel(out, ref) < 2e-2


def test_compiled_na2d_on_cuda_matches_eager():
    """The custom op traces under torch.compile(fullgraph=True) and its compiled forward/backward match eager."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 14, 14, 2, 32, generator=gen).cuda().half().requires_grad_() for _ in range(3))
    rpb = torch.randn(2, 13, 13, generator=gen).cuda().requires_grad_()

    def f(q, k, v, rpb):
        return ops.na2d(q, k, v, 7, dilation=2, rpb=rpb)

    grad = torch.randn(q.shape, generator=gen).cuda().half()
    outs = [fn(q, k, v, rpb) for fn in (f, torch.compile(f, fullgraph=True))]
    grads = [torch.autograd.grad(o, (q, k, v, rpb), grad) for o in outs]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-3, rtol=0)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize('fn, size', [(ops.window_attention, 7), (ops.grid_attention, 7)], ids=['window', 'grid'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
def test_partitions_on_cuda_match_reference(fn, size, dtype):
    """MaxViT's block and grid attention (any size: zero-padded, padded keys masked) in half precision, fwd + bwd."""
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(2, 17, 15, 2, 32, generator=gen, dtype=torch.float64) for _ in range(3)]
    rpb = torch.randn(2, 13, 13, generator=gen, dtype=torch.float64) * .5
    grad = torch.randn(2, 17, 15, 2, 32, generator=gen, dtype=torch.float64)
    results = []
    for device, t, backend in (('cuda', dtype, None), ('cpu', torch.float64, 'reference')):
        inputs = [x.to(device, t).requires_grad_() for x in (*leaves, rpb)]
        out = fn(*inputs[:3], size, rpb=inputs[3], backend=backend)
        results.append((out, torch.autograd.grad(out, inputs, grad.to(device, t))))
    (out, grads), (ref, ref_grads) = results
    assert out.dtype == dtype
    assert _rel(out, ref) < 1e-2
    for g, r in zip(grads, ref_grads):
        assert _rel(g, r) < 2e-2


@pytest.mark.parametrize('name', ['dinat_tiny', 'maxvit_na_tiny_tf_224', 'nat_mini', 'transnext_micro'])
def test_zoo_model_bf16_train_step_on_cuda(name):
    """One bf16 channels-last training step on the GPU: finite loss and gradients, and eval logits close to the same
    weights' float32 CPU logits (the benchmark's setting: benchmarks/models.py)."""
    import timm

    import backbones  # noqa: F401  (registers the zoo)

    torch.manual_seed(0)
    model = timm.create_model(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.eval()(x)
    model = model.cuda().to(memory_format=torch.channels_last)
    xc = x.cuda().contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        logits = model(xc)
    assert _rel(logits.float(), ref) < 5e-2
    model.train()
    with torch.autocast('cuda', dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(xc), torch.tensor([1, 2], device='cuda'))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
