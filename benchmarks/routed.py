"""Benchmark routed attention (BiFormer's token attention) against the official gather approach.

At BiFormer-S's routed stages (dims 64/128/256, head_dim 32, topk 1/4/16; maps = input / 4, 8, 16): 224 with
n_win=7 (regions 8x8, 4x4, 2x2 tokens) and a 1024x1024 detection input with n_win=16 (16x16, 8x8, 4x4). Both sides
get the same queries, keys, values and routing indices (from :func:`ops.region_routing`, outside the timing):

* ``ours``: :func:`ops.routed_attention` on the default backend (torch on CPU, triton on CUDA);
* ``official gather``: ``ops/bra_legacy.py``'s path, reimplemented here: region-major q and kv (its layout after
  the qkv projection of region-partitioned tokens), ``KVGather`` (``torch.gather`` of the expanded kv: a topk-fold
  copy of K and V, whose backward materialises a ``[n, R, R, S, C_kv]`` gradient), per-head ``q k^T * scale``,
  softmax, ``@ v``, the output rearranged to the map.

Forward (no grad) and forward + backward (gradients of q, k, v) time and peak memory: on CUDA do_bench medians and
``max_memory_allocated`` above the inputs; on CPU the best of ``--reps`` runs in thread CPU time (one torch thread)
and the resident-set growth of one call (benchmarks/_common.py's ``measure_op``; the script re-executes itself with a
64 KiB glibc mmap threshold so freed tensors return to the OS). On CPU a gather backward whose ``[n, R, R, S, C]``
gradient exceeds ``--max-gather-gb`` is skipped with the reason.

    python benchmarks/routed.py [--sizes 224 1024] [--device cuda] [--short]

Writes ``benchmarks/results/<device>/routed.{json,md}`` (``<device>`` as benchmarks/_common.py names it) or under
``--out-dir``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ops  # noqa: E402
from benchmarks._common import TIME_BUDGET, cpu_name, device_name, measure_op  # noqa: E402

# BiFormer-S routed stages: (stage, dim, topk, stride); head_dim 32; stage 4 (topk -2) is plain attention
STAGES = [(1, 64, 1, 4), (2, 128, 4, 8), (3, 256, 16, 16)]
HEAD_DIM = 32
N_WIN = {224: 7, 1024: 16}  # classification and BiFormer's detection / segmentation setting
MODES = ('fwd', 'fwd_bwd')
IMPLS = ('ours', 'official gather')


def official_gather(q: torch.Tensor, kv: torch.Tensor, r_idx: torch.Tensor, n_win: int, heads: int, side: int,
                    scale: float) -> torch.Tensor:
    """bra_legacy.py's attention from region-major ``q [n, R, S, C]``, ``kv [n, R, S, 2C]`` and ``r_idx [n, R,
    topk]``: KVGather, then dense attention of each region's S queries over its topk * S gathered keys."""
    n, p2, w2, c_kv = kv.shape
    c = c_kv // 2
    topk = r_idx.shape[-1]
    kv_sel = torch.gather(kv.view(n, 1, p2, w2, c_kv).expand(-1, p2, -1, -1, -1), dim=2,
                          index=r_idx.view(n, p2, topk, 1, 1).expand(-1, -1, -1, w2, c_kv))  # [n, R, topk, S, 2C]
    k_sel, v_sel = kv_sel.split([c, c], dim=-1)
    d = c // heads
    k_sel = k_sel.reshape(n, p2, topk, w2, heads, d).permute(0, 1, 4, 5, 2, 3).reshape(n * p2, heads, d, topk * w2)
    v_sel = v_sel.reshape(n, p2, topk, w2, heads, d).permute(0, 1, 4, 2, 3, 5).reshape(n * p2, heads, topk * w2, d)
    q_pix = q.reshape(n, p2, w2, heads, d).permute(0, 1, 3, 2, 4).reshape(n * p2, heads, w2, d)
    attn = ((q_pix * scale) @ k_sel).softmax(-1)
    out = attn @ v_sel  # [n R, heads, S, d]
    rs = side // n_win
    out = out.reshape(n, n_win, n_win, heads, rs, rs, d).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(n, side, side, c)


def to_region_major(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """``[n, H, W, C]`` -> ``[n, R, S, C]`` (the official layout: tokens are partitioned before the projection)."""
    n, side, _, c = x.shape
    rs = side // n_win
    return x.reshape(n, n_win, rs, n_win, rs, c).permute(0, 1, 3, 2, 4, 5).reshape(n, n_win ** 2, rs * rs, c)


def gather_grad_bytes(batch: int, n_win: int, side: int, dim: int, elem: int) -> int:
    """Bytes of the official gather's backward buffer ``[n, R, R, S, 2C]`` (the expanded kv's gradient)."""
    r = n_win ** 2
    return batch * r * r * (side // n_win) ** 2 * 2 * dim * elem


def problems(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for size in args.sizes:
        n_win = args.n_win or N_WIN.get(size, 7)
        batch = max(1, round(args.batch * (224 / size) ** 2))
        for stage, dim, topk, stride in STAGES:
            if args.stages and stage not in args.stages:
                continue
            side = size // stride
            if side % n_win:
                raise SystemExit(f'input {size}: stage {stage} map {side} is not a multiple of n_win={n_win}')
            out.append(dict(name=f'{size} stage {stage}', input=size, stage=stage, batch=batch, map=side, dim=dim,
                            heads=dim // HEAD_DIM, topk=min(topk, n_win ** 2), n_win=n_win,
                            region=f'{side // n_win}x{side // n_win}'))
    return out


def run_problem(p: dict[str, Any], args: argparse.Namespace, deadline: float) -> tuple[list[dict], list[dict], float]:
    device, dtype = args.device, args.dtype
    on_gpu = device.type == 'cuda'
    gen = torch.Generator().manual_seed(0)
    b, side, dim, heads, n_win = p['batch'], p['map'], p['dim'], p['heads'], p['n_win']
    q, k, v = (torch.randn(b, side, side, dim, generator=gen).to(device, dtype) for _ in range(3))
    _, idx = ops.region_routing(q, k, n_win, p['topk'])
    scale = dim ** -0.5  # BiFormer: qk_dim ** -0.5
    qr, kvr = to_region_major(q, n_win), to_region_major(torch.cat([k, v], -1), n_win)
    leaves = {'ours': [t.view(b, side, side, heads, HEAD_DIM).requires_grad_() for t in (q, k, v)],
              'official gather': [qr.requires_grad_(), kvr.requires_grad_()]}

    def call(impl):
        if impl == 'ours':
            return ops.routed_attention(*leaves[impl], idx, n_win, scale=scale).flatten(-2)
        return official_gather(*leaves[impl], idx, n_win, heads, side, scale)

    with torch.no_grad():
        diff = (call('ours').float() - call('official gather').float()).abs().max().item()
    rows, skipped = [], []
    elem = torch.finfo(dtype).bits // 8
    for impl in IMPLS:
        for mode in MODES:
            reason = TIME_BUDGET if time.monotonic() > deadline else None
            if (reason is None and impl == 'official gather' and mode == 'fwd_bwd' and not on_gpu
                    and gather_grad_bytes(b, n_win, side, dim, elem) > args.max_gather_gb * 2 ** 30):
                reason = (f'its backward buffer [n, R, R, S, 2C] is '
                          f'{gather_grad_bytes(b, n_win, side, dim, elem) / 2 ** 30:.1f} GB > --max-gather-gb')
            if reason:
                skipped.append(dict(problem=p['name'], peer=impl, mode=mode, reason=reason))
                print(f"skip {p['name']} / {impl} / {mode}: {reason}", flush=True)
                continue

            def fn(impl=impl, mode=mode):
                if mode == 'fwd':
                    with torch.no_grad():
                        call(impl)
                else:
                    torch.autograd.grad(call(impl).float().sum(), leaves[impl])

            ms, peak, spread = measure_op(fn, device, args.reps, args.short)
            rows.append(dict(problem=p['name'], impl=impl, mode=mode, ms=round(ms, 3),
                             peak_mb=round(peak / 2 ** 20, 1), spread=round(spread, 3)))
            print(rows[-1], flush=True)
    return rows, skipped, diff


def comparisons(rows: list[dict]) -> list[dict]:
    """Gather / ours per problem and mode: time (> 1: ours faster) and peak memory (> 1: ours smaller)."""
    by = {(r['problem'], r['impl'], r['mode']): r for r in rows}
    out = []
    for (prob, impl, mode), r in by.items():
        g = by.get((prob, 'official gather', mode))
        if impl == 'ours' and g is not None:
            out.append(dict(problem=prob, mode=mode, speedup=round(g['ms'] / r['ms'], 2),
                            memory_ratio=round(g['peak_mb'] / r['peak_mb'], 2) if r['peak_mb'] > 0 else None))
    return out


def targets(comps: list[dict], on_gpu: bool) -> list[str]:
    """The issue's targets at the 1024 shapes: CPU >= 3x less peak memory and faster; GPU >= 3x faster, 5x less."""
    speed, memory = (3.0, 5.0) if on_gpu else (1.0, 3.0)
    lines = []
    for c in comps:
        if not c['problem'].startswith('1024'):
            continue
        ok_t = c['speedup'] > speed if speed == 1.0 else c['speedup'] >= speed
        ok_m = c['memory_ratio'] is not None and c['memory_ratio'] >= memory
        lines.append(f"{c['problem']} {c['mode']}: {c['speedup']}x faster ({'met' if ok_t else 'MISSED'}: "
                     f"{'>' if speed == 1.0 else '>='} {speed:g}x), {c['memory_ratio']}x less peak memory "
                     f"({'met' if ok_m else 'MISSED'}: >= {memory:g}x)")
    return lines


def markdown(data: dict) -> str:
    meta = data['meta']
    on_gpu = meta['cuda']
    lines = [f"# Routed attention vs the official gather on {meta['device']}", '',
             f"torch {meta['torch']}; {meta['date']}; {meta['threads']} torch thread(s); {meta['dtype']}; "
             f"backend of ours: {meta['backend']}. "
             + ('do_bench median ms; peak `max_memory_allocated` above the inputs.' if on_gpu else
                f"best of {meta['reps']} runs, thread CPU time; peak: resident-set growth of one call."), '']
    if not on_gpu and meta.get('load_before'):
        lines += [f"CPU: load average {' '.join(f'{x:.2f}' for x in meta['load_before'])} before and "
                  f"{' '.join(f'{x:.2f}' for x in meta['load_after'])} after the run, on a shared machine: absolute "
                  'numbers say little, ratios within the run more.', '']
    lines += ['BiFormer-S routed stages (head_dim 32; topk 1/4/16; n_win 7 at 224, 16 at 1024); the same inputs and '
              'routing indices for both; ours = `ops.routed_attention`, official gather = bra_legacy.py\'s KVGather '
              '+ attention (reimplemented in benchmarks/routed.py).', '',
              '| problem | batch | map | dim / heads | region | topk | max abs diff |',
              '|---|---:|---:|---|---|---:|---:|']
    for p in data['problems']:
        lines.append(f"| {p['name']} | {p['batch']} | {p['map']}x{p['map']} | {p['dim']} / {p['heads']} | "
                     f"{p['region']} | {p['topk']} | {p.get('max_abs_diff', float('nan')):.1e} |")
    lines += ['', '| problem | impl | mode | ms | peak MB |', '|---|---|---|---:|---:|']
    for r in data['rows']:
        lines.append(f"| {r['problem']} | {r['impl']} | {r['mode']} | {r['ms']:.2f} | {r['peak_mb']:.1f} |")
    lines += ['', '## Comparisons', '', 'official gather / ours: time (> 1: ours faster), peak memory (> 1: ours '
              'smaller).', '', '| problem | mode | speed-up | memory ratio |', '|---|---|---:|---:|']
    for c in data['comparisons']:
        lines.append(f"| {c['problem']} | {c['mode']} | {c['speedup']:.2f} | {c['memory_ratio']} |")
    if data['targets']:
        lines += ['', '## Targets (1024 shapes)', ''] + [f'- {t}' for t in data['targets']]
    if data['skipped']:
        lines += ['', '## Skipped', ''] + [f"- {s['problem']} / {s['peer']} / {s['mode']}: {s['reason']}"
                                           for s in data['skipped']]
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 1024])
    parser.add_argument('--stages', type=int, nargs='+', default=None, help='subset of 1 2 3')
    parser.add_argument('--n-win', type=int, default=None, help='override (default 7 at 224, 16 at 1024)')
    parser.add_argument('--batch', type=int, default=None, help='batch at 224, scaled by (224 / size)^2, at least '
                        '1 (default 4 on CPU, 64 on CUDA)')
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', default=None, help='default bfloat16 on CUDA, float32 on CPU')
    parser.add_argument('--threads', type=int, default=1, help='CPU torch threads')
    parser.add_argument('--max-gather-gb', type=float, default=10.0, help='CPU: skip a gather backward whose '
                        'expanded gradient is larger')
    parser.add_argument('--short', action='store_true', help='GPU suite mode: short do_bench windows')
    parser.add_argument('--time-budget', type=float, default=0, help='seconds; what is left then is skipped')
    parser.add_argument('--no-plot', action='store_true', help='accepted for the GPU suite (nothing is plotted)')
    parser.add_argument('--out-dir', type=Path, default=None)
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    on_gpu = args.device.type == 'cuda'
    if not on_gpu and os.environ.get('MALLOC_MMAP_THRESHOLD_') != '65536':
        os.environ['MALLOC_MMAP_THRESHOLD_'] = '65536'  # freed tensors return to the OS: see benchmarks/_common.py
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if not on_gpu:
        torch.set_num_threads(args.threads)
    args.dtype = getattr(torch, args.dtype or ('bfloat16' if on_gpu else 'float32'))
    args.batch = args.batch or (64 if on_gpu else 4)
    deadline = time.monotonic() + args.time_budget if args.time_budget else math.inf
    probe = torch.empty(1, 7, 7, 1, HEAD_DIM, device=args.device, dtype=args.dtype)
    backend = ops.resolve_backend('routed', None, args.device, args.dtype, check_args=(probe, probe, probe, None, None))
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    meta = dict(device=torch.cuda.get_device_name(args.device) if on_gpu else cpu_name(), cuda=on_gpu,
                torch=torch.__version__, threads=torch.get_num_threads(), dtype=str(args.dtype).removeprefix('torch.'),
                backend=backend, reps=args.reps, date=datetime.date.today().isoformat(),
                load_before=load, skipped=[], peers_left_out=[])
    out = args.out_dir or ROOT / 'benchmarks' / 'results' / device_name(args.device)
    out.mkdir(parents=True, exist_ok=True)
    probs, rows, skipped = problems(args), [], []
    for p in probs:
        if time.monotonic() > deadline:
            skipped += [dict(problem=p['name'], peer=i, mode=m, reason=TIME_BUDGET) for i in IMPLS for m in MODES]
            continue
        r, s, diff = run_problem(p, args, deadline)
        p['max_abs_diff'] = diff
        rows += r
        skipped += s
    comps = comparisons(rows)
    meta['skipped'] = skipped
    meta['load_after'] = os.getloadavg() if hasattr(os, 'getloadavg') else None
    data = dict(meta=meta, problems=probs, rows=rows, skipped=skipped, comparisons=comps,
                targets=targets(comps, on_gpu))
    (out / 'routed.json').write_text(json.dumps(data, indent=1) + '\n')
    md = markdown(data)
    (out / 'routed.md').write_text(md)
    print(md)
    print(f'wrote {out / "routed.json"}, {out / "routed.md"}')


if __name__ == '__main__':
    main()
