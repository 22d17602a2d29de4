"""The fused Triton backend (``ops.na.backends.triton_na``) against the reference backend, forward and all gradients.

On CPU the kernels run in Triton's interpreter. Triton reads ``TRITON_INTERPRET`` when kernels are decorated, so
it cannot be switched on inside a pytest worker that may already hold compiled-mode kernels: each test runs its
group of cases in one subprocess started with ``TRITON_INTERPRET=1`` (xdist-safe: nothing is shared). The
kernels are also compiled for sm_80/sm_90 (no GPU needed), which the interpreter does not check. With CUDA the
same cases also run natively, bf16 included.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _na_cases import CASES as NA_CASES

ROOT = Path(__file__).resolve().parents[1]
TOL = {'float32': 1e-4, 'float16': 1e-2, 'bfloat16': 5e-2}
GRADS = ('dq', 'dk', 'dv', 'drpb', 'dadd_k', 'dadd_v')


def case(shape, kernel_size, stride=1, dilation=1, is_causal=False, **kw) -> dict:
    """One problem: the pattern plus options (batch, heads, head_dim, dtype, rpb, extra, valid_shape, tiles, ...)."""
    return dict(shape=list(shape), kernel_size=kernel_size, stride=stride, dilation=dilation, is_causal=is_causal, **kw)


# tiles: forced ((T0, T1, T2), (KT0, KT1, KT2)) tile shapes, so small inputs reach full (unmasked) key tiles,
# padded tiles and multi-tile halos that default tiles only meet on large inputs.
GROUPS = {
    '1d': [
        case((20,), 5),
        case((37,), 7, stride=3, dilation=2, batch=2, head_dim=8),
        case((19,), 6, is_causal=True, head_dim=24),
        case((23,), 4, stride=4),  # blocked, non-divisible: the last block overlaps the previous one
        case((16,), 16),  # kernel == length: self-attention
        case((40,), 33, rpb=True, tiles=((1, 1, 16), (1, 1, 16))),  # full tiles
        case((45,), 9, stride=2, dilation=2, is_causal=True, rpb=True, tiles=((1, 1, 16), (1, 1, 16))),
    ],
    '2d': [
        case((9, 11), 3, heads=2),
        case((9, 11), (3, 5), stride=(2, 1), dilation=(1, 2), is_causal=(False, True), rpb=True),
        case((14, 14), 7, stride=7, rpb=True, head_dim=32),  # Swin/MaxViT block: one full tile per window
        case((12, 9), 3, dilation=(4, 3), rpb=True),  # MaxViT grid: kernel == group length
        case((4, 3), (3, 2)),  # tiny map
        case((10, 9), (10, 9)),  # kernel == length
        case((11, 10), 7, rpb=True, tiles=((1, 4, 4), (1, 4, 4))),
        case((10, 11), (5, 7), stride=(2, 3), is_causal=(True, False), rpb=True, tiles=((1, 2, 8), (1, 4, 4))),
        case((7, 9), 3, rpb=True, tiles=((1, 3, 5), (1, 5, 7))),  # non-power-of-two (padded) tiles
    ],
    '3d': [
        case((5, 6, 7), (3, 2, 5), stride=(1, 2, 3), dilation=(1, 2, 1), is_causal=(True, False, False), rpb=True,
             head_dim=24),
        case((4, 5, 6), 3, heads=2, head_dim=64),
        case((4, 4, 8), (3, 3, 7), rpb=True, tiles=((2, 2, 4), (2, 2, 4))),
    ],
    'extra_valid': [
        case((12, 10), 7, rpb=True, extra=5),
        case((20,), 5, extra=3, extra_batch=1, batch=2),  # extra tokens shared by the batch
        case((13,), 5, extra=70, head_dim=32),  # more extra tokens than one block
        case((16,), 3, valid_shape=[5]),  # queries whose whole window is padding: output 0, lse -inf
        case((9, 11), (3, 5), valid_shape=[7, 9], rpb=True, extra=2, tiles=((1, 4, 4), (1, 4, 4))),
        case((12, 12), 4, stride=4, valid_shape=[10, 11]),  # Swin-style zero-padded blocks, padded keys masked
    ],
    # blocked windows of < 16 tokens: the per-key kernels of _triton_small (HiLo's 2 x 2 Hi-Fi windows)
    'small_windows': [
        case((8, 12), 2, stride=2, heads=2, head_dim=32, batch=2),
        case((6, 9), 3, stride=3, head_dim=24, grad_lse=True),
        case((12,), 4, stride=4, head_dim=8),
        case((4, 4, 6), (2, 2, 3), stride=(2, 2, 3), heads=3),
        case((6, 8), (1, 2), stride=(1, 2), dtype='float16', noncontig=True),
        case((4, 6), 2, stride=2, dtype='float16', head_dim=128, heads=2),
    ],
    'fp16_layout': [
        case((20,), 5, dtype='float16', extra=3, rpb=True),
        case((9, 11), (3, 5), dilation=(2, 1), dtype='float16', rpb=True, heads=2),
        case((4, 4, 5), 3, dtype='float16', head_dim=16),
        case((270,), 256, dtype='float16', rpb=True),  # window of 256 keys: 128-query forward tiles
        case((10, 9), 5, noncontig=True, head_dim=16, rpb=True),  # q/k/v views of one qkv tensor, strided D for v
        case((13, 9), 5, grad_lse=True, extra=2),  # gradient reaching lse (merge_attentions)
        case((9, 8), 5, rpb=True, deterministic=True, tiles=((1, 4, 4), (1, 4, 4))),
    ],
}


def _inputs(c: dict, device: str):
    gen = torch.Generator().manual_seed(c.get('seed', 0))
    dtype = getattr(torch, c.get('dtype', 'float32'))
    b, h, d, shape = c.get('batch', 1), c.get('heads', 1), c.get('head_dim', 16), c['shape']

    def rand(*size):
        return torch.randn(*size, generator=gen).to(device=device, dtype=dtype)

    if c.get('noncontig'):
        qkv = rand(b, *shape, h, 3, d)
        q, k = qkv[..., 0, :], qkv[..., 1, :]
        v = rand(b, *shape, d, h).transpose(-1, -2)
    else:
        q, k, v = rand(b, *shape, h, d), rand(b, *shape, h, d), rand(b, *shape, h, d)
    nd = len(shape)
    ks = c['kernel_size'] if isinstance(c['kernel_size'], (list, tuple)) else [c['kernel_size']] * nd
    rpb = torch.randn(h, *(2 * kk - 1 for kk in ks), generator=gen).to(device) if c.get('rpb') else None
    add_k = add_v = None
    if c.get('extra'):
        eb = c.get('extra_batch', b)
        add_k, add_v = rand(eb, c['extra'], h, d), rand(eb, c['extra'], h, d)
    return q, k, v, rpb, add_k, add_v


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to max(1, max |b|); inf unless both agree on which entries are infinite."""
    a, b = a.double(), b.double()
    if not torch.equal(torch.isinf(a), torch.isinf(b)) or a.isnan().any():
        return float('inf')
    fin = torch.isfinite(b)
    if not fin.any():
        return 0.0
    return ((a[fin] - b[fin]).abs().max() / b[fin].abs().max().clamp_min(1)).item()


def check_case(c: dict, device: str) -> dict:
    """Run one case through the triton and reference backends; return the error per output."""
    from ops.na.backends import reference, triton_na
    from ops.na.pattern import make_spec

    tuple_or = (lambda x: tuple(x) if isinstance(x, (list, tuple)) else x)
    spec = make_spec(c['shape'], *(tuple_or(c[n]) for n in ('kernel_size', 'stride', 'dilation', 'is_causal')),
                     valid_shape=c.get('valid_shape'))
    q, k, v, rpb, add_k, add_v = _inputs(c, device)
    scale = q.shape[-1] ** -0.5
    triton_na._forced_tiles = tuple(tuple(t) for t in c['tiles']) if c.get('tiles') else None
    torch.use_deterministic_algorithms(bool(c.get('deterministic')))
    try:
        out, lse = triton_na.forward(q, k, v, spec, scale, rpb, add_k, add_v)
        gen = torch.Generator().manual_seed(1)
        grad = torch.randn(out.shape, generator=gen).to(device=device, dtype=out.dtype)
        grad_lse = torch.randn(lse.shape, generator=gen).to(device) if c.get('grad_lse') else None
        grads = triton_na.backward(grad, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse)
        repeat = triton_na.backward(grad, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse)
    finally:
        triton_na._forced_tiles = None
        torch.use_deterministic_algorithms(False)

    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in (q, k, v, rpb, add_k, add_v)]
    ref_out, ref_lse = reference.forward(leaves[0], leaves[1], leaves[2], spec, scale, *leaves[3:])
    loss = (ref_out.float() * grad.float()).sum()
    if grad_lse is not None:
        loss = loss + (ref_lse * grad_lse).sum()
    present = [t for t in leaves if t is not None]
    ref_grads = iter(torch.autograd.grad(loss, present))
    errors = {'out': _max_err(out, ref_out), 'lse': _max_err(lse, ref_lse)}
    for name, t, g in zip(GRADS, leaves, grads):
        if t is not None:
            errors[name] = _max_err(g, next(ref_grads))
    errors['dtypes_ok'] = out.dtype == q.dtype and lse.dtype == torch.float32 and all(
        g is None or g.dtype == t.dtype for g, t in zip(grads, (q, k, v, rpb, add_k, add_v)))
    if c.get('deterministic'):
        errors['bitwise_repeat'] = all(a is None or torch.equal(a, b) for a, b in zip(grads, repeat))
    return errors


@contextlib.contextmanager
def _tiles(c: dict):
    """Force the case's tile shapes (if any) for the duration."""
    from ops.na.backends import triton_na

    triton_na._forced_tiles = tuple(tuple(t) for t in c['tiles']) if c.get('tiles') else None
    try:
        yield
    finally:
        triton_na._forced_tiles = None


def check_dropout(c: dict, device: str) -> dict:
    """Attention dropout of the triton kernels; an error (or a bool that must hold) per check.

    The kernel's own dropped weights ``P Z`` are read back by a forward with one-hot values (``v[j] = e_j``, so
    ``out[i, j] = P[i, j] Z[i, j]``; head_dim >= keys); the gradients are then compared with a dense reference that
    applies that same mask. With ``mean_over_batch`` every batch element holds the same problem (each with its own
    stream) and the mean output must approach the undropped one.
    """
    from ops.na.backends import reference, triton_na
    from ops.na.pattern import make_spec

    p, seed = c['dropout_p'], torch.tensor([1234, 99])
    spec = make_spec(c['shape'], c['kernel_size'])
    q, k, v, rpb, add_k, add_v = _inputs(c, device)
    scale = q.shape[-1] ** -0.5
    if c.get('mean_over_batch'):
        q, k, v = (t[:1].expand(t.shape).contiguous() for t in (q, k, v))
        out = triton_na.forward(q, k, v, spec, scale, dropout_p=p, dropout_seed=seed)[0]
        return {'mean_over_batch': _max_err(out.mean(0), triton_na.forward(q[:1], k[:1], v[:1], spec, scale)[0][0])}
    n_keys, (b, h, d) = math.prod(c['shape']) + (0 if add_k is None else add_k.shape[1]), (q.shape[0], *q.shape[-2:])
    with _tiles(c):
        base, base_lse = triton_na.forward(q, k, v, spec, scale, rpb, add_k, add_v)
        out, lse = triton_na.forward(q, k, v, spec, scale, rpb, add_k, add_v, dropout_p=p, dropout_seed=seed)
        checks = {
            'p0_unchanged': torch.equal(base, triton_na.forward(q, k, v, spec, scale, rpb, add_k, add_v, 0.0,
                                                                seed)[0]),
            'seed_repeat': torch.equal(out, triton_na.forward(q, k, v, spec, scale, rpb, add_k, add_v, p, seed)[0]),
            'other_seed_differs': not torch.equal(out, triton_na.forward(q, k, v, spec, scale, rpb, add_k, add_v, p,
                                                                         seed + 1)[0]),
            'lse_undropped': _max_err(lse, base_lse)}
        eye = torch.eye(n_keys, d).to(device)
        n_tokens = math.prod(c['shape'])
        v_hot = eye[:n_tokens].view(1, *c['shape'], 1, d).expand(v.shape).contiguous()
        av_hot = None if add_k is None else eye[n_tokens:][None, :, None].expand(add_v.shape).contiguous()
        weights = triton_na.forward(q, k, v_hot, spec, scale, rpb, add_k, av_hot, p, seed)[0]
        gen = torch.Generator().manual_seed(1)
        grad = torch.randn(out.shape, generator=gen).to(device)
        grads = triton_na.backward(grad, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, dropout_p=p,
                                   dropout_seed=seed)
    dropped = weights.reshape(b, -1, h, d).transpose(1, 2)[..., :n_keys].double()  # [B, H, N, N + E]: P Z
    probs = reference._softmax(reference._logits(q, k, v, spec, scale, rpb, add_k, add_v)[0])[0].double()
    keep = dropped > probs / 2
    checks['mask_is_kept_or_zero'] = _max_err(dropped, torch.where(keep, probs / (1 - p), 0))
    seen = probs > 0
    checks['drops_some_keeps_some'] = bool(0.05 < (seen & ~keep).sum() / seen.sum() < 0.6)

    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in (q, k, v, rpb, add_k, add_v)]
    logits, _, _, vf = reference._logits(*leaves[:3], spec, scale, *leaves[3:])
    ref = (reference._softmax(logits)[0] * keep / (1 - p)) @ vf  # [B, H, N, D]
    ref = ref.transpose(1, 2).reshape(q.shape)
    checks['out'] = _max_err(out, ref)
    present = [t for t in leaves if t is not None]
    ref_grads = iter(torch.autograd.grad((ref * grad).sum(), present))
    for name, t, g in zip(GRADS, leaves, grads):
        if t is not None:
            checks[name] = _max_err(g, next(ref_grads))
    return checks


def check_api_dropout(device: str) -> dict:
    """``ops.na2d(dropout_p > 0, backend='triton')`` through the custom op: ``torch.manual_seed`` reproduces the
    output and gradients, a new draw gives another mask, and the gradients are those of the custom op's
    backward."""
    import ops

    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(2, 6, 5, 2, 16, generator=gen).to(device).requires_grad_(True) for _ in range(3)]
    rpb = torch.randn(2, 5, 5, generator=gen).to(device).requires_grad_(True)

    def run():
        out = ops.na2d(*leaves, 3, rpb=rpb, dropout_p=0.3, backend='triton')
        return out, torch.autograd.grad(out.square().sum(), [*leaves, rpb])

    torch.manual_seed(7)
    out, grads = run()
    redraw, _ = run()
    torch.manual_seed(7)
    again, grads_again = run()
    return {'api_seed_repeat': torch.equal(out, again) and all(map(torch.equal, grads, grads_again)),
            'api_redraw_differs': not torch.equal(out, redraw),
            'api_grads_finite': all(bool(g.isfinite().all()) and bool(g.abs().sum() > 0) for g in grads)}


DROPOUT_CASES = [
    case((8,), 5, dropout_p=0.3, heads=2, batch=2, rpb=True, extra=3),
    case((4, 5), 3, dropout_p=0.2, head_dim=32, extra=2, rpb=True, tiles=((1, 2, 4), (1, 2, 4))),
    case((3, 2, 4), (3, 2, 3), dropout_p=0.5, head_dim=24),
    case((8,), 5, dropout_p=0.25, batch=512, mean_over_batch=True),
]


def _worker() -> None:
    """Subprocess entry: read cases (JSON) from stdin, print their errors (JSON) as the last stdout line."""
    import dataclasses

    import triton.runtime.interpreter as interp

    from ops.na.backends import _triton_kernels, _triton_small

    # test-only interpreter speed-ups: no int-overflow assertions on every op (sizes here are tiny), and no
    # re-patching of triton.language on each nested call of our @triton.jit helpers (the launch patched their
    # module already; triton's own helpers such as tl.zeros still go through the original path)
    interp.interpreter_builder.options = dataclasses.replace(interp.interpreter_builder.options,
                                                             sanitize_overflow=False)
    nested_call = interp.InterpretedFunction.__call__

    def fast_call(self, *args, **kwargs):
        if self.fn.__globals__ is vars(_triton_kernels) or self.fn.__globals__ is vars(_triton_small):
            return self.rewrite()(*args, **kwargs)
        return nested_call(self, *args, **kwargs)

    interp.InterpretedFunction.__call__ = fast_call
    torch.set_num_threads(1)
    job = json.loads(sys.stdin.read())
    if 'conformance' in job:
        print(json.dumps(_conformance(job['conformance'], 'cpu')))
    elif 'dropout' in job:
        print(json.dumps([check_dropout(c, 'cpu') for c in job['dropout']] + [check_api_dropout('cpu')]))
    elif 'sweep' in job:
        print(json.dumps(_sweep(*job['sweep'])))
    else:
        print(json.dumps([check_case(c, 'cpu') for c in job['cases']]))


def _conformance(indices: list[int], device: str, dtype: torch.dtype = torch.float32) -> list[str]:
    """The shared conformance kit (``_na_cases``) through the public API with ``backend='triton'``; failures."""
    from _na_cases import CASES, check_against_reference

    failures = []
    for i in indices:
        try:
            check_against_reference('triton', CASES[i], dtype=dtype, device=device, grad_lse=i % 2 == 1)
        except AssertionError as e:
            failures.append(f'{CASES[i]}: {e}')
    return failures


SWEEP_TILES = [None, ((1, 2, 8), (1, 4, 4)), ((2, 2, 4), (2, 2, 4)), ((1, 1, 16), (1, 1, 16)),
               ((1, 4, 4), (2, 2, 4)), ((1, 3, 5), (1, 2, 9))]


def _sweep(seed: int, n_cases: int, device: str = 'cpu') -> list[str]:
    """Seeded random patterns (``_na_cases.random_case``) with random tile shapes through the public API."""
    import dataclasses
    import random

    from _na_cases import check_against_reference, random_case

    from ops.na.backends import triton_na

    rng = random.Random(seed)
    failures = []
    for _ in range(n_cases):
        case = dataclasses.replace(random_case(rng, max_len=11), head_dim=8)  # the kernels need head_dim % 8 == 0
        tiles = rng.choice(SWEEP_TILES)
        triton_na._forced_tiles = tiles
        try:
            check_against_reference('triton', case, device=device, grad_lse=rng.random() < 0.3)
        except AssertionError as e:
            failures.append(f'{case} tiles={tiles}: {e}')
        finally:
            triton_na._forced_tiles = None
    return failures


def _run_interpreted(job: dict) -> list:
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]),
               OMP_NUM_THREADS='1')
    code = 'import test_ops_triton; test_ops_triton._worker()'
    proc = subprocess.run([sys.executable, '-c', code], input=json.dumps(job), capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_close(cases: list[dict], results: list[dict]) -> None:
    failures = []
    for c, errors in zip(cases, results):
        tol = TOL[c.get('dtype', 'float32')]
        bad = {k: e for k, e in errors.items() if (e is False) or (not isinstance(e, bool) and not e <= tol)}
        if bad:
            failures.append(f'{c}: {bad}')
    assert not failures, '\n'.join(failures)


@pytest.mark.parametrize('group', list(GROUPS))
def test_triton_interpreted_matches_reference(group):
    cases = GROUPS[group]
    _assert_close(cases, _run_interpreted({'cases': cases}))


def test_triton_interpreted_random_sweep():
    failures = _run_interpreted({'sweep': [0, 24]})
    assert not failures, '\n'.join(failures)


def test_triton_interpreted_conformance():
    from _na_cases import CASES

    failures = _run_interpreted({'conformance': list(range(len(CASES)))})
    assert not failures, '\n'.join(failures)


def test_triton_interpreted_dropout():
    """Dropout under the interpreter: p=0 unchanged, seeded masks, exact gradients with the kernel's mask, and the
    mean over independent streams within statistical error (~9 sigma; 0.25 * |out| without the 1/(1-p) scale)."""
    *results, api = _run_interpreted({'dropout': DROPOUT_CASES})
    assert all(api.values()), api
    mean = [r.pop('mean_over_batch') for r in results if 'mean_over_batch' in r]
    assert mean and all(e < 0.1 for e in mean), mean
    _assert_close(DROPOUT_CASES, results)


# CUDA: one test per case (xdist spreads the kernel compilations over the cores; see benchmarks/gpu_suite.py)
CUDA_CASES = [(f'{g}{i}', c) for g, cases in GROUPS.items() for i, c in enumerate(cases)]
CUDA_CASES += [(f'{name}-bf16', dict(c, dtype='bfloat16')) for name, c in CUDA_CASES if c.get('dtype') == 'float16']
CUDA_SWEEP_SHARDS = 8  # 8 x 25 random cases


@pytest.mark.cuda
@pytest.mark.parametrize('name, c', CUDA_CASES, ids=[n for n, _ in CUDA_CASES])
def test_triton_cuda_matches_reference(name, c):
    _assert_close([c], [check_case(c, 'cuda')])


@pytest.mark.cuda
@pytest.mark.parametrize('shard', range(CUDA_SWEEP_SHARDS))
def test_triton_cuda_random_sweep(shard):
    failures = _sweep(shard, 25, 'cuda')
    assert not failures, '\n'.join(failures)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize('index', range(len(NA_CASES)))
def test_triton_cuda_conformance(index, dtype):
    failures = _conformance([index], 'cuda', dtype)
    assert not failures, '\n'.join(failures)


def _bad_input_error(**overrides) -> Exception:
    from ops.na.backends import triton_na
    from ops.na.pattern import make_spec

    args = dict(q=torch.randn(1, 8, 8, 2, 16), k=None, v=None, spec=make_spec((8, 8), 3), rpb=None, add_k=None,
                add_v=None)
    args.update(overrides)
    args['k'] = args['q'] if args['k'] is None else args['k']
    args['v'] = args['q'] if args['v'] is None else args['v']
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        triton_na.check_inputs(**args)
    return info.value


@pytest.mark.parametrize('overrides, words', [
    (dict(q=torch.randn(1, 8, 8, 2, 12)), 'head_dim'),
    (dict(q=torch.randn(1, 8, 8, 2, 136)), 'head_dim'),
    (dict(q=torch.randn(1, 8, 8, 2, 16, dtype=torch.float64)), 'float16/bfloat16/float32'),
    (dict(k=torch.randn(1, 8, 7, 2, 16)), 'same shape'),
    (dict(q=torch.randn(1, 64, 2, 16)), 'spatial'),
    (dict(rpb=torch.randn(2, 5, 4)), 'rpb must have shape (2, 5, 5)'),
    (dict(add_k=torch.randn(1, 3, 2, 16)), 'together'),
    (dict(add_k=torch.randn(1, 3, 2, 8), add_v=torch.randn(1, 3, 2, 8)), 'additional_keys/values'),
])
def test_triton_bad_input(overrides, words):
    assert words in str(_bad_input_error(**overrides))


def test_triton_needs_cuda_or_interpreter():
    from ops.na.backends import triton_na

    if triton_na._INTERPRET:
        pytest.skip('this worker imported the kernels in interpreter mode')
    assert 'CUDA' in str(_bad_input_error())


def _capture_launches(monkeypatch, module, names: tuple[str, ...]) -> list:
    """Replace ``module``'s kernels ``names`` by recorders of their launches ``(kernel, args, kwargs)``."""
    launches = []

    class Capture:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.kernel, args, kwargs))

    for name in names:
        monkeypatch.setattr(module, name, Capture(getattr(module, name)))
    return launches


def _compile_launches(launches: list, arch: int) -> None:
    """Compile every recorded launch to a cubin for ``sm_{arch}`` (types from the recorded arguments)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    types = {torch.float16: 'fp16', torch.bfloat16: 'bf16', torch.float32: 'fp32'}
    for kernel, args, kwargs in launches:
        values = dict(zip(kernel.arg_names, args), **kwargs)
        signature, constexprs = {}, {}
        for p in kernel.params:
            v = values[p.name]
            if p.is_constexpr:
                signature[p.name], constexprs[p.name] = 'constexpr', v
            else:
                signature[p.name] = ('*' + types[v.dtype] if isinstance(v, torch.Tensor)
                                     else 'fp32' if isinstance(v, float) else 'i32')
        options = {k: kwargs[k] for k in ('num_warps', 'num_stages') if k in kwargs}
        compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget('cuda', arch, 32),
                                  options=options)
        assert compiled.asm['cubin'], kernel.fn.__name__


@pytest.mark.parametrize('arch', [80, 90])
@pytest.mark.parametrize('dtype, deterministic', [(torch.float16, True), (torch.bfloat16, False)])
def test_triton_kernels_compile_for_gpu(monkeypatch, tmp_path, arch, dtype, deterministic):
    """Every kernel compiles to an Ampere / Hopper cubin (no GPU needed): catches what the interpreter accepts
    but the compiler rejects (types changing across branches, non-constexpr globals, unsupported ops). Both dRPB
    reductions (per-program partials in deterministic mode, atomics otherwise), both 16-bit dtypes (bf16 is
    not checked by the interpreter at all), with and without attention dropout."""
    from ops.na.backends import triton_na
    from ops.na.pattern import make_spec

    if triton_na._INTERPRET:
        pytest.skip('this worker imported the kernels in interpreter mode')
    monkeypatch.setenv('TRITON_CACHE_DIR', str(tmp_path))
    launches = _capture_launches(monkeypatch, triton_na._kernels(), ('_na_fwd_kernel', '_na_delta_kernel',
                                                                     '_na_bwd_dq_kernel', '_na_bwd_dkv_kernel',
                                                                     '_na_bwd_extra_kernel'))
    monkeypatch.setattr(triton_na, '_INTERPRET', True)  # accept CPU tensors: nothing is launched

    spec = make_spec((10, 12), (5, 3), dilation=(2, 1), is_causal=(False, True))
    q = torch.randn(1, 10, 12, 2, 24, dtype=dtype)
    rpb, extra = torch.randn(2, 9, 5), torch.randn(1, 3, 2, 24, dtype=dtype)
    out, lse = torch.zeros_like(q), torch.zeros(q.shape[:-1])
    dropout = dict(dropout_p=0.0 if deterministic else 0.1, dropout_seed=torch.tensor([3, 4]))
    triton_na.forward(q, q, q, spec, 0.2, rpb, extra, extra, **dropout)
    torch.use_deterministic_algorithms(deterministic)
    try:
        triton_na.backward(out, q, q, q, out, lse, spec, 0.2, rpb, extra, extra, lse, **dropout)
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(launches) == 5
    assert [kw['RPB_ATOMIC'] for _, _, kw in launches if 'RPB_ATOMIC' in kw] == [not deterministic]
    assert [kw['DROPOUT'] for _, _, kw in launches if 'DROPOUT' in kw] == [not deterministic] * 4
    _compile_launches(launches, arch)


@pytest.mark.parametrize('shape, kernel_size', [((9, 9, 9), 9), ((33, 33), 33)])
def test_triton_declines_rpb_gradient_of_large_kernels(monkeypatch, shape, kernel_size):
    """The dRPB register table of these kernels would spill: declined only when the rpb gradient is needed."""
    from ops.na.backends import triton_na
    from ops.na.pattern import make_spec

    monkeypatch.setattr(triton_na, '_INTERPRET', True)  # accept CPU tensors: nothing is launched
    spec = make_spec(shape, kernel_size)
    q = torch.randn(1, *shape, 1, 8)
    rpb = torch.randn(1, *(2 * kernel_size - 1,) * len(shape), requires_grad=True)
    with pytest.raises(ValueError, match='rpb gradient'):
        triton_na.check_inputs(q, q, q, spec, rpb)
    with pytest.raises(ValueError, match='rpb gradient'):
        triton_na.backward(q, q, q, q, q, q[..., 0], spec, 1.0, rpb.detach())
    with torch.no_grad():
        triton_na.check_inputs(q, q, q, spec, rpb)
    triton_na.check_inputs(q, q, q, spec, rpb.detach())
    smaller = make_spec(shape, kernel_size - 1 if len(shape) == 3 else 31)
    triton_na.check_inputs(q, q, q, smaller, torch.randn(1, *(2 * smaller.kernel_size[0] - 1,) * len(shape),
                                                         requires_grad=True))


@pytest.mark.parametrize('shape, kernel, stride, kw, small', [
    ((8, 12), 2, 2, {}, True),  # HiLo's 2 x 2 windows
    ((30,), 15, 15, {}, True),
    ((12, 12), 4, 4, {}, False),  # 16 tokens: the tiled kernels' one-tile-per-window path
    ((9, 12), 2, 2, {}, False),  # not divisible: the last window overlaps (NATTEN rule), tiled
    ((8, 8), 2, 1, {}, False),  # overlapping windows
    ((8, 8), 2, 2, {'dilation': 2}, False),
    ((8, 8), 2, 2, {'is_causal': True}, False),
    ((8, 8), 2, 2, {'rpb': True}, False),
    ((8, 8), 2, 2, {'valid_shape': (7, 8)}, False),
])
def test_small_window_kernels_serve_only_blocked_tiny_windows(shape, kernel, stride, kw, small):
    """Which problems the per-key kernels take (the tiled kernels take the rest, every case checked above)."""
    from ops.na.backends import _triton_small
    from ops.na.pattern import make_spec

    nd = len(shape)
    spec = make_spec(shape, (kernel,) * nd, (stride,) * nd, (kw.get('dilation', 1),) * nd,
                     (kw.get('is_causal', False),) * nd, valid_shape=kw.get('valid_shape'))
    rpb = torch.zeros(1, *(2 * kernel - 1,) * nd) if kw.get('rpb') else None
    assert _triton_small.serves(shape, spec, rpb, None, 0.0) is small
    if small:
        assert not _triton_small.serves(shape, spec, None, torch.zeros(1, 2, 1, 8), 0.0)  # extra tokens
        assert not _triton_small.serves(shape, spec, None, None, 0.1)  # dropout


@pytest.mark.parametrize('arch', [80, 90])
@pytest.mark.parametrize('dtype, head_dim', [(torch.bfloat16, 32), (torch.float16, 128), (torch.float32, 24)])
def test_small_window_kernels_compile_for_gpu(monkeypatch, tmp_path, arch, dtype, head_dim):
    """The small-window kernels (forward, backward with a gradient on lse) compile to Ampere / Hopper cubins."""
    from ops.na.backends import _triton_small, triton_na
    from ops.na.pattern import make_spec

    if triton_na._INTERPRET:
        pytest.skip('this worker imported the kernels in interpreter mode')
    monkeypatch.setenv('TRITON_CACHE_DIR', str(tmp_path))
    launches = _capture_launches(monkeypatch, _triton_small, ('_small_fwd_kernel', '_small_bwd_kernel'))
    monkeypatch.setattr(triton_na, '_INTERPRET', True)  # accept CPU tensors: nothing is launched
    spec = make_spec((8, 12), 2, 2)
    q = torch.randn(2, 8, 12, 3, head_dim, dtype=dtype)
    triton_na.forward(q, q, q, spec, 0.2)
    lse = torch.zeros(q.shape[:-1])
    triton_na.backward(q, q, q, q, q, lse, spec, 0.2, grad_lse=lse)
    assert [k.fn.__name__ for k, _, _ in launches] == ['_small_fwd_kernel', '_small_bwd_kernel']
    _compile_launches(launches, arch)
