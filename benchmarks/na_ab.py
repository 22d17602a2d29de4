"""In-process A/B of the CPU neighborhood-attention backend: the working tree against a git revision.

On a shared or virtual machine the same code can run 10-60% faster or slower from one process to the next, so two
benchmark runs cannot resolve a change of a few percent. This script loads the base revision's
``ops/na/backends/torch_blocks.py`` and ``torch_na.py`` as separate modules next to the working tree's, and times
both revisions' forward and backward (``torch_na.forward`` / ``torch_na.backward``, rpb gradient on) in the same
process, in shuffled order, call after call: the load hits both alike. It also reports the largest difference
between the two revisions' outputs and gradients.

    python benchmarks/na_ab.py --base 17275eb --threads 1 --cases 56,28,14,7

Writes ``<name>.json`` / ``<name>.md`` (default ``na_ab``) under ``benchmarks/results/<machine>/`` or
``--out-dir``. The base revision's two files must import what the working tree's ``ops`` package still provides
(they are loaded as siblings of the current ones).
"""
from __future__ import annotations

import argparse
import datetime
import random
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's `ops`, not benchmarks/ops.py

from benchmarks._common import cpu_name, loadavg, write_results  # noqa: E402
from ops.na.backends import torch_na  # noqa: E402
from ops.na.pattern import make_spec  # noqa: E402

# name -> (map side, heads, stride, dilation): DiNAT-T's stages at 224 (ops.py's dinat224 series, 2-D, k=7, head_dim
# 32) and MaxViT-T's block (w) / grid (g) attention
CASES = {'56': (56, 2, 1, 1), '56d8': (56, 2, 1, 8), '28': (28, 4, 1, 1), '28d4': (28, 4, 1, 4), '14': (14, 8, 1, 1),
         '14d2': (14, 8, 1, 2), '7': (7, 16, 1, 1), 'w56': (56, 2, 7, 1), 'g56': (56, 2, 1, 8)}
_PACKAGE = 'ops.na.backends'


def _load(rev: str, path: str, name: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
    """Module ``name`` (registered in sys.modules, a sibling of the package's backends) from ``rev:path``."""
    try:
        src = subprocess.run(['git', '-C', str(ROOT), 'show', f'{rev}:{path}'], check=True, capture_output=True,
                             text=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f'error: cannot read {path} at revision {rev!r}: {e.stderr.strip()}') from None
    if replace is not None:
        src = src.replace(*replace)
    module = types.ModuleType(f'{_PACKAGE}.{name}')
    module.__package__ = _PACKAGE
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(src, f'{rev}:{path}', 'exec'), module.__dict__)
    return module


def load_base(rev: str) -> types.ModuleType:
    """The base revision's ``torch_na``, wired to the base revision's ``torch_blocks``."""
    _load(rev, 'ops/na/backends/torch_blocks.py', '_ab_base_blocks')
    return _load(rev, 'ops/na/backends/torch_na.py', '_ab_base_na',
                 ('from . import torch_blocks', 'from . import _ab_base_blocks as torch_blocks'))


def _inputs(case: str, batch: int):
    size, heads, stride, dilation = CASES[case]
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad = (torch.randn(batch, size, size, heads, 32, generator=gen) for _ in range(4))
    rpb = torch.randn(heads, 13, 13, generator=gen) * .1
    return q, k, v, grad, rpb, make_spec((size, size), 7, stride, dilation, False, None, 'clamp')


def run_case(base: types.ModuleType, case: str, batch: int, reps: int) -> dict:
    q, k, v, grad, rpb, spec = _inputs(case, batch)
    scale = 32 ** -0.5
    out, lse = torch_na.forward(q, k, v, spec, scale, rpb)
    calls = {
        ('base', 'fwd'): lambda: base.forward(q, k, v, spec, scale, rpb),
        ('new', 'fwd'): lambda: torch_na.forward(q, k, v, spec, scale, rpb),
        ('base', 'bwd'): lambda: base.backward(grad, q, k, v, out, lse, spec, scale, rpb),
        ('new', 'bwd'): lambda: torch_na.backward(grad, q, k, v, out, lse, spec, scale, rpb)}
    results = {key: fn() for key, fn in calls.items()}
    diff = max(float((a - b).abs().max()) for phase in ('fwd', 'bwd')
               for a, b in zip(results['base', phase], results['new', phase]) if a is not None)
    for fn in calls.values():  # warm-up: plans, caches, allocator
        fn()
    times = {key: [] for key in calls}
    for _ in range(reps):
        for key, fn in random.sample(list(calls.items()), len(calls)):
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    ms = {f'{rev}_{phase}': statistics.median(t) * 1e3 for (rev, phase), t in times.items()}
    return {'case': case, **ms, 'speedup_fwd': ms['base_fwd'] / ms['new_fwd'],
            'speedup_bwd': ms['base_bwd'] / ms['new_bwd'], 'max_abs_diff': diff}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True, help='git revision to compare the working tree with')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--cases', default='56,28,14,7', help=f'comma-separated, of {", ".join(CASES)}')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--reps', type=int, default=25, help='timed calls per revision and phase')
    parser.add_argument('--name', default='na_ab', help='results file name')
    parser.add_argument('--out-dir', type=Path, default=None, help='default: benchmarks/results/<machine>/')
    args = parser.parse_args(argv)
    cases = args.cases.split(',')
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f'unknown case(s) {unknown}; choose from {list(CASES)}')
    torch.set_num_threads(args.threads)
    base = load_base(args.base)
    random.seed(0)
    start = loadavg()
    rows = []
    for case in cases:
        rows.append(run_case(base, case, args.batch, args.reps))
        r = rows[-1]
        print(f"{case}: fwd {r['base_fwd']:.2f} -> {r['new_fwd']:.2f} ms ({r['speedup_fwd']:.3f}x), bwd "
              f"{r['base_bwd']:.2f} -> {r['new_bwd']:.2f} ms ({r['speedup_bwd']:.3f}x), max |diff| "
              f"{r['max_abs_diff']:.1e}", flush=True)
    meta = {'base': args.base, 'threads': args.threads, 'batch': args.batch, 'reps': args.reps, 'cpu': cpu_name(),
            'torch': torch.__version__, 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(' ', 'minutes'),
            'loadavg_start': start, 'loadavg_end': loadavg()}
    md = [f'# NA backend A/B on {cpu_name()}: working tree vs {args.base}', '',
          f"torch {torch.__version__}; {meta['date']}; {args.threads} torch thread(s), batch {args.batch}, head_dim "
          f"32, k=7, rpb (and its gradient) on, fp32; median of {args.reps} calls per revision and phase, both "
          f"revisions in one process in shuffled order; load average {start} at start, {meta['loadavg_end']} at "
          'end. Speedup = base time / working-tree time (> 1: the working tree is faster).', '',
          '| case | base fwd ms | new fwd ms | fwd speedup | base bwd ms | new bwd ms | bwd speedup | max abs diff |',
          '|---|---:|---:|---:|---:|---:|---:|---:|']
    md += [f"| {r['case']} | {r['base_fwd']:.2f} | {r['new_fwd']:.2f} | {r['speedup_fwd']:.3f}x | "
           f"{r['base_bwd']:.2f} | {r['new_bwd']:.2f} | {r['speedup_bwd']:.3f}x | {r['max_abs_diff']:.1e} |"
           for r in rows]
    write_results(args.name, {'meta': meta, 'rows': rows}, '\n'.join(md) + '\n', torch.device('cpu'), args.out_dir)
    return rows


if __name__ == '__main__':
    main()
