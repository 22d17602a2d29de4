"""Backend conformance kit: pattern cases, input builders and a checker comparing any backend to ``reference``.

Reused by every backend's tests (``test_ops.py`` for torch, ``test_ops_triton.py`` for triton)::

    from _na_cases import CASES, check_against_reference
    @pytest.mark.parametrize('case', CASES, ids=str)
    def test_mine(case):
        check_against_reference('mybackend', case, dtype=torch.float32, device='cpu')
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

import ops

__all__ = ['Case', 'CASES', 'BORDER_CASES', 'TOLERANCES', 'make_inputs', 'random_case', 'run',
           'check_against_reference']


@dataclass(frozen=True)
class Case:
    """One pattern plus input sizes; ``extra`` additional tokens; ``valid`` = valid_shape (masked padding)."""

    shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...] = None
    dilation: tuple[int, ...] = None
    causal: tuple[bool, ...] = None
    rpb: bool = False
    extra: int = 0
    valid: tuple[int, ...] | None = None
    batch: int = 2
    heads: int = 2
    head_dim: int = 8
    extra_batch1: bool = False  # additional keys/values broadcast over the batch ([1, n_extra, H, D])
    border: str = 'clamp'  # 'mask': centred windows, zero-padded and masked at the borders (TransNeXt)

    def __post_init__(self):
        n = len(self.shape)
        for name, default in (('stride', 1), ('dilation', 1), ('causal', False)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, (default,) * n)

    def __str__(self) -> str:
        parts = [f"S{'x'.join(map(str, self.shape))}", f"k{'x'.join(map(str, self.kernel))}"]
        if any(s > 1 for s in self.stride):
            parts.append(f"s{'x'.join(map(str, self.stride))}")
        if any(d > 1 for d in self.dilation):
            parts.append(f"d{'x'.join(map(str, self.dilation))}")
        if any(self.causal):
            parts.append('c' + ''.join('1' if c else '0' for c in self.causal))
        if self.rpb:
            parts.append('rpb')
        if self.extra:
            parts.append(f'e{self.extra}' + ('b1' if self.extra_batch1 else ''))
        if self.valid:
            parts.append(f"v{'x'.join(map(str, self.valid))}")
        if self.border != 'clamp':
            parts.append(self.border)
        parts.append(f'B{self.batch}H{self.heads}D{self.head_dim}')
        return '-'.join(parts)


CASES: list[Case] = [
    # 1-D
    Case((16,), (5,)),
    Case((13,), (4,), rpb=True),  # even kernel
    Case((10,), (4,), (4,)),  # blocked, non-divisible (NATTEN's overlapping last block)
    Case((21,), (3,), (2,), (3,), rpb=True, extra=2),  # strided + dilated
    Case((12,), (5,), causal=(True,), extra=1),
    Case((9,), (9,), rpb=True),  # kernel == length: self-attention
    Case((8,), (4,), (4,), valid=(3,)),  # second block fully masked: output 0, lse -inf
    # 2-D
    Case((9, 11), (3, 5), (1, 2), (2, 1), (False, True), rpb=True, extra=3),
    Case((7, 7), (7, 7), rpb=True),
    Case((3, 4), (3, 2), rpb=True, batch=1, heads=1),  # tiny map
    Case((12, 10), (4, 5), (4, 5), rpb=True, extra=2, extra_batch1=True),  # blocked
    Case((12, 9), (3, 3), (1, 1), (4, 3), valid=(11, 8)),  # grid: kernel G, dilation L/G, masked padding
    Case((14, 13), (7, 5), (3, 5), (2, 2), (True, False), rpb=True),
    Case((8, 8), (4, 4), (4, 4), rpb=True, valid=(6, 7)),  # zero-padded Swin blocks, padding masked
    Case((10, 12), (3, 3), (2, 3), (3, 2), (True, True), extra=1),
    Case((5, 6), (5, 3), rpb=True, head_dim=16, heads=3),
    # 3-D
    Case((6, 7, 5), (3, 3, 2), (1, 3, 1), (2, 1, 2), (True, False, False), rpb=True, extra=1),
    Case((4, 5, 6), (3, 3, 3), rpb=True, batch=1),
    Case((4, 6, 6), (2, 3, 3), (2, 3, 3), valid=(3, 5, 6), extra=2),
]

# border='mask' (centred, zero-padded and masked windows): odd sizes, even kernels, strides, dilation, causal axes,
# kernels larger than the map, extras; the torch backend serves them (triton declines them)
BORDER_CASES: list[Case] = [
    Case((7, 9), (3, 3), rpb=True, extra=3, border='mask'),  # TransNeXt's pattern
    Case((11,), (4,), rpb=True, border='mask'),
    Case((9, 7), (5, 3), (2, 3), (1, 2), rpb=True, border='mask'),
    Case((10, 9), (3, 5), (1, 1), (1, 1), (True, False), rpb=True, extra=1, border='mask'),
    Case((2, 3), (3, 5), rpb=True, border='mask', batch=1),  # kernel > length
    Case((5, 6, 4), (3, 3, 3), (1, 2, 1), (1, 1, 2), rpb=True, extra=2, extra_batch1=True, border='mask'),
    Case((8, 8), (4, 4), (4, 4), valid=(7, 6), border='mask'),  # blocked, truncated last block
]

# NATTEN's bars (docs/design.md, 'Tests and measurements'): forward / backward (dq looser) absolute error
# against the float64 reference.
TOLERANCES = {
    torch.float64: dict(fwd=1e-9, bwd=1e-8),
    torch.float32: dict(fwd=1e-4, bwd=1e-3),
    torch.float16: dict(fwd=1e-2, bwd=2e-2),
    torch.bfloat16: dict(fwd=5e-2, bwd=5e-2),
}


def make_inputs(case: Case, dtype: torch.dtype = torch.float32, device: str | torch.device = 'cpu',
                seed: int = 0) -> dict:
    """Fresh random ``query/key/value`` (and rpb / additional tokens when the case has them)."""
    gen = torch.Generator().manual_seed(seed)
    full = (case.batch, *case.shape, case.heads, case.head_dim)

    def rnd(*shape, std=1.):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype=dtype, device=device)

    inputs = dict(query=rnd(*full), key=rnd(*full), value=rnd(*full), rpb=None, additional_keys=None,
                  additional_values=None)
    if case.rpb:
        inputs['rpb'] = rnd(case.heads, *(2 * k - 1 for k in case.kernel), std=.5)
    if case.extra:
        eb = 1 if case.extra_batch1 else case.batch
        inputs['additional_keys'] = rnd(eb, case.extra, case.heads, case.head_dim)
        inputs['additional_values'] = rnd(eb, case.extra, case.heads, case.head_dim)
    return inputs


def run(backend: str, case: Case, inputs: dict, return_lse: bool = True, **kwargs):
    """Call the public op (``ops.na1d/2d/3d``) for ``case`` on ``backend``."""
    fn = (ops.na1d, ops.na2d, ops.na3d)[len(case.shape) - 1]
    return fn(inputs['query'], inputs['key'], inputs['value'], case.kernel, case.stride, case.dilation, case.causal,
              rpb=inputs['rpb'], additional_keys=inputs['additional_keys'],
              additional_values=inputs['additional_values'], return_lse=return_lse, backend=backend,
              valid_shape=case.valid, border=case.border, **kwargs)


def random_case(rng: random.Random, max_len: int = 9, ndim: int | None = None,
                head_dims: tuple[int, ...] = (4, 8), border: str = 'clamp') -> Case:
    """A random valid pattern (any mix of kernel, stride, dilation, causal, rpb, extras, valid_shape)."""
    ndim = ndim or rng.choice((1, 1, 2, 2, 2, 3))
    max_len = max_len if ndim < 3 else min(max_len, 6)
    shape, kernel, stride, dilation, causal = [], [], [], [], []
    for _ in range(ndim):
        n = rng.randint(1, max_len)
        d = rng.choice((1, 1, 1, 2, 3)) if n >= 2 else 1
        d = min(d, n)
        k = rng.randint(1, n // d)
        shape.append(n), kernel.append(k), dilation.append(d)
        stride.append(rng.randint(1, k) if rng.random() < .4 else 1)
        causal.append(rng.random() < .2)
    valid = tuple(rng.randint(1, n) for n in shape) if rng.random() < .2 else None
    return Case(tuple(shape), tuple(kernel), tuple(stride), tuple(dilation), tuple(causal), rpb=rng.random() < .5,
                extra=rng.choice((0, 0, 0, 1, 3)), valid=valid, batch=rng.randint(1, 2), heads=rng.randint(1, 2),
                head_dim=rng.choice(head_dims), border=border)


def _grads(out: torch.Tensor, lse: torch.Tensor, leaves: dict, grad_out: torch.Tensor, grad_lse: torch.Tensor | None):
    outputs, grads = [out], [grad_out]
    if grad_lse is not None:
        outputs.append(torch.where(torch.isfinite(lse), lse, 0))
        grads.append(grad_lse.to(lse.dtype))
    names = [n for n, t in leaves.items() if t is not None]
    got = torch.autograd.grad(outputs, [leaves[n] for n in names], grads)
    return dict(zip(names, got))


def check_against_reference(backend: str, case: Case, dtype: torch.dtype = torch.float32,
                            device: str | torch.device = 'cpu', seed: int = 0, backward: bool = True,
                            grad_lse: bool = False, tolerances: dict | None = None) -> None:
    """Assert that ``backend`` matches the float64 reference on ``case``: output, lse, and every gradient.

    ``grad_lse`` also back-propagates a random gradient into the returned lse.
    """
    tol = tolerances or TOLERANCES[dtype]
    inputs = make_inputs(case, dtype, device, seed)
    ref_inputs = {n: None if t is None else t.detach().double().cpu() for n, t in inputs.items()}
    for group in (inputs, ref_inputs):
        for t in group.values():
            if t is not None:
                t.requires_grad_(backward)
    out, lse = run(backend, case, inputs)
    ref_out, ref_lse = run('reference', case, ref_inputs)
    assert out.dtype == dtype and out.shape == ref_out.shape, (out.dtype, out.shape)
    assert lse.shape == ref_lse.shape, lse.shape
    torch.testing.assert_close(out.detach().double().cpu(), ref_out.detach(), atol=tol['fwd'], rtol=0,
                               msg=lambda m: f'{backend} {case} output: {m}')
    lse_c = lse.detach().double().cpu()
    assert torch.equal(torch.isinf(lse_c), torch.isinf(ref_lse)), f'{backend} {case}: -inf lse rows differ'
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse_c[finite], ref_lse.detach()[finite], atol=tol['fwd'], rtol=tol['fwd'],
                               msg=lambda m: f'{backend} {case} lse: {m}')
    if not backward:
        return
    gen = torch.Generator().manual_seed(seed + 1)
    g_out = torch.randn(ref_out.shape, generator=gen, dtype=torch.float64)
    g_lse = torch.randn(ref_lse.shape, generator=gen, dtype=torch.float64) if grad_lse else None
    got = _grads(out, lse, inputs, g_out.to(dtype=dtype, device=device),
                 None if g_lse is None else g_lse.to(device=device))
    want = _grads(ref_out, ref_lse, ref_inputs, g_out, g_lse)
    for name, w in want.items():
        g = got[name].double().cpu()
        scale = max(1., float(w.abs().max()))
        torch.testing.assert_close(g, w, atol=tol['bwd'] * scale, rtol=0,
                                   msg=lambda m, name=name: f'{backend} {case} d{name}: {m}')

