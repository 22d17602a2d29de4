"""Benchmark TransNeXt against the official code: aggregated attention at transnext_micro stage-1/2 shapes, and the
whole transnext_micro model.

* Aggregated attention (stage 1: dim 48, 2 heads, sr 8, map = input / 4; stage 2: dim 96, 4 heads, sr 4, map =
  input / 8): ours (``ops.na2d`` with ``border='mask'`` + ``ops.dense_attention`` + lse merge + ``ops.na_av``) vs the
  official ``attention_native.AggregatedAttention`` built for the map (it unfolds 9 copies of K and V), with the same
  weights; forward and forward+backward time and peak memory per input size (224 and 1024: 56x56 / 256x256 maps in
  stage 1). The official module gets its CPB tables from ours (the same index and rows, tests/test_transnext.py),
  which skips its slow 2-D ``torch.unique`` coordinate generation (not timed either way).
* transnext_micro at 224: inference img/s (eval forward) and training img/s (forward, cross-entropy, backward,
  AdamW step) with peak memory, ours vs the official model holding the SAME weights (the official random init,
  moved off its init by tools/transnext_official_parity.py's ``perturb_``; the fp32 logit difference is recorded).

Timing and memory are benchmarks/models.py's ``measure``: on CUDA, CUDA-event medians and ``max_memory_allocated``
(the attention rows in fp32; model rows under ``--amp-dtype``, default bf16); on CPU, the median process CPU time
with one torch thread and the resident-set growth during one call. The CUDA path of the official code
(``swattention``) is not benchmarked: it is a separate CUDA extension that must be built.

    python benchmarks/transnext.py --official /path/to/TransNeXt [--sizes 224 1024] [--device cuda]

Writes ``benchmarks/results/<device>/transnext.{json,md}`` (``<device>`` named as by benchmarks/models.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import timm  # noqa: E402

from backbones.checkpoint import fit  # noqa: E402
from backbones.transnext import (  # noqa: E402
    AggregatedAttention,
    TransNeXt,
    model_cfgs,
    stage_tables,
)
from benchmarks import models as bench  # noqa: E402

STAGES = {'stage 1': (48, 2, 8, 4), 'stage 2': (96, 4, 4, 8)}  # dim, heads, sr, stride (transnext_micro)
MODEL, MODEL_SIZE = 'transnext_micro', 224


def _official_tables(t) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``(relative_pos_index [N * P], relative_coords_table)`` from our stage tables (same values)."""
    n_w = t.table.shape[1]
    return (t.ih[:, None, :, None] * n_w + t.iw[None, :, None, :]).reshape(-1), t.table.reshape(-1, 2)


def _step(fn, x: torch.Tensor, backward: bool) -> None:
    if not backward:
        with torch.no_grad():
            fn()
        return
    fn().sum().backward()
    x.grad = None


def bench_attention(args: argparse.Namespace, official_mod: Any) -> list[dict[str, Any]]:
    rows = []
    for stage, (dim, heads, sr, stride) in STAGES.items():
        for size in args.sizes:
            side = size // stride
            batch = max(1, round(args.batch * (224 / size) ** 2))
            torch.manual_seed(0)
            ours = AggregatedAttention(dim, heads, 3, sr_ratio=sr).to(args.device)
            pool = ours.pool_size(side, side)
            tables = stage_tables((side, side), pool, (224 // stride,) * 2, 3, str(args.device))
            x = torch.randn(batch, side * side, dim, device=args.device, requires_grad=True)
            impls = {'ours': partial(ours, x, side, side, tables)}
            if official_mod is not None:
                official = official_mod.AggregatedAttention(dim, (side, side), heads, 3, sr_ratio=sr).to(args.device)
                official.load_state_dict(ours.state_dict())
                index, table = _official_tables(tables)
                impls['official'] = partial(official, x, side, side, index, table)
                with torch.no_grad():
                    diff = (impls['official']() - impls['ours']()).abs().max().item()
                print(f'{stage} @ {size}: max |official - ours| = {diff:.2e}', flush=True)
            for name, fn in impls.items():
                row = dict(stage=stage, impl=name, input=size, map=f'{side}x{side}', batch=batch)
                for mode in ('fwd', 'fwd_bwd'):
                    try:
                        res = bench.measure(partial(_step, fn, x, mode == 'fwd_bwd'), args.device, args.iters,
                                            args.warmup, args.cpu_memory)
                        row[f'{mode}_ms'], row[f'{mode}_mb'] = round(res['ms'], 2), round(res['peak_mb'], 1)
                    except torch.OutOfMemoryError:
                        row[f'{mode}_ms'] = row[f'{mode}_mb'] = 'OOM'
                    bench._free(args.device, collect=True)
                rows.append(row)
                print(row, flush=True)
    return rows


def bench_model(args: argparse.Namespace, official_mod: Any) -> tuple[list[dict[str, Any]], float | None]:
    torch.manual_seed(0)
    ours = TransNeXt(**model_cfgs[MODEL]).eval()
    ours.pretrained_cfg = dict(architecture=MODEL)
    models, diff = {'ours': ours}, None
    if official_mod is not None:
        sys.path.insert(0, str(ROOT / 'tools'))
        from transnext_official_parity import perturb_
        official = official_mod.transnext_micro(img_size=MODEL_SIZE).eval()
        perturb_(official, torch.Generator().manual_seed(0))
        ours.load_state_dict(fit(official.state_dict(), ours), strict=True)
        x = torch.randn(2, 3, MODEL_SIZE, MODEL_SIZE, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            diff = (official(x) - ours(x)).abs().max().item()
        print(f'{MODEL} @ {MODEL_SIZE}, fp32: max |official - ours| logits = {diff:.2e}', flush=True)
        models['official'] = official
        del official
    del ours
    rows = []
    for name in list(models):
        model = models.pop(name).to(args.device)
        row = dict(impl=name, model=MODEL, img_size=MODEL_SIZE,
                   params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
        for mode in ('infer', 'train'):
            res = bench.run_mode(model, mode, args.model_batch, MODEL_SIZE, args)
            row[mode] = {k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}
        rows.append(row)
        print(row, flush=True)
        del model
    return rows, diff


def ratios(attn: list[dict[str, Any]], models: list[dict[str, Any]]) -> dict[str, float]:
    """ours / official: time and memory of the attention rows (< 1: ours better), img/s of the model (> 1)."""
    out = {}
    by = {(r['stage'], r['input'], r['impl']): r for r in attn}
    for (stage, size, impl), r in by.items():
        o = by.get((stage, size, 'official'))
        if impl == 'ours' and o is not None:
            for k in ('fwd_ms', 'fwd_bwd_ms', 'fwd_bwd_mb'):
                if isinstance(r[k], float) and isinstance(o[k], float) and o[k] > 0:
                    out[f'{stage} @ {size} {k}'] = round(r[k] / o[k], 3)
    m = {r['impl']: r for r in models}
    if 'official' in m:
        for mode in ('infer', 'train'):
            a, b = m['ours'][mode], m['official'][mode]
            if a.get('img_s', -1) > 0 and b.get('img_s', -1) > 0:
                out[f'{MODEL} {mode} img/s'] = round(a['img_s'] / b['img_s'], 3)
    return out


def markdown(result: dict[str, Any]) -> str:
    meta = result['meta']
    on_gpu = meta['device_type'] == 'cuda'
    timing = 'median of CUDA-event times' if on_gpu else 'median process CPU time per iteration (one torch thread)'
    memory = 'peak `torch.cuda.max_memory_allocated`' if on_gpu else 'resident-set growth during one iteration'
    lines = [f"# TransNeXt vs the official code on {meta['device']}", '',
             f"torch {meta['torch']}, timm {meta['timm']}; {meta['date']}; {meta['threads']} torch thread(s). "
             f"{meta['warmup']} warm-up + {meta['iters']} timed iterations, {timing}; memory: {memory}. fp32 "
             'attention rows; random inputs.']
    if not on_gpu:
        lines += ['', f"CPU: load average {meta['loadavg_before']} before and {meta['loadavg_after']} after the run, "
                  'on a shared machine. Ratios within the run say more than absolute numbers.']
    if meta['skipped']:
        lines += ['', 'Skipped: ' + '; '.join(meta['skipped']) + '.']
    lines += ['', '## Aggregated attention at transnext_micro shapes', '',
              '| stage | impl | input | map | batch | fwd ms | fwd MB | fwd+bwd ms | fwd+bwd MB |',
              '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in result['attention']:
        lines.append(f"| {r['stage']} | {r['impl']} | {r['input']} | {r['map']} | {r['batch']} | {r['fwd_ms']} | "
                     f"{r['fwd_mb']} | {r['fwd_bwd_ms']} | {r['fwd_bwd_mb']} |")
    fmt = lambda res, k: (f'{res[k]:.1f}' if res.get(k, -1) >= 0 else 'n/a') if k in res else 'error'  # noqa: E731
    lines += ['', f'## {MODEL} at {MODEL_SIZE}: inference and training (forward + backward + AdamW step)', '',
              '| impl | params (M) | infer batch | infer img/s | infer MB | train batch | train img/s | train MB |',
              '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in result['models']:
        lines.append(f"| {r['impl']} | {r['params_m']} | " + ' | '.join(
            f"{r[m]['batch']} | {fmt(r[m], 'img_s')} | {fmt(r[m], 'peak_mb')}" for m in ('infer', 'train')) + ' |')
    if result['ratios']:
        lines += ['', 'Ours / official: ' + ', '.join(f'{k} {v:.2f}' for k, v in result['ratios'].items()) + '.']
    if result['model_max_abs_diff'] is not None:
        lines += ['', f"Same weights: max abs fp32 logit difference {result['model_max_abs_diff']:.1e}."]
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--official', type=Path, help='checkout of github.com/DaiShiResearch/TransNeXt')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 1024], help='attention input sizes')
    parser.add_argument('--batch', type=int, default=4, help='attention batch at 224 (scaled by (224/size)^2, >= 1)')
    parser.add_argument('--model-batch', type=int, help=f'{MODEL} batch (default: 128 on CUDA, 4 on CPU)')
    parser.add_argument('--iters', type=int, default=3, help='timed iterations (the median is kept)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp-dtype', choices=('bfloat16', 'float16', 'float32'),
                        help='autocast dtype of the model rows (default: bfloat16 on CUDA, float32 on CPU)')
    args = parser.parse_args()
    args.device = torch.device(args.device)
    on_gpu = args.device.type == 'cuda'
    args.model_batch = args.model_batch or (128 if on_gpu else 4)
    args.amp_dtype = args.amp_dtype or ('bfloat16' if on_gpu else 'float32')
    args.channels_last, args.compile = False, False
    args.cpu_memory = not on_gpu and bench.cpu_memory_tracking()
    if args.cpu_memory:
        bench.release_freed_memory()
    skipped = [] if args.official else ['official rows and ratios (no --official)']
    official_mod = None
    if args.official:
        sys.path.insert(0, str(ROOT / 'tools'))
        from transnext_official_parity import official_module
        official_mod = official_module(args.official)  # transnext.py; its AggregatedAttention is the native one
    loadavg = lambda: ' '.join(f'{v:.2f}' for v in os.getloadavg())  # noqa: E731
    meta = dict(device=torch.cuda.get_device_name(args.device) if on_gpu else bench._cpu_name(),
                device_type=args.device.type, threads=torch.get_num_threads(), torch=torch.__version__,
                timm=timm.__version__, date=datetime.date.today().isoformat(), iters=args.iters, warmup=args.warmup,
                amp_dtype=args.amp_dtype, skipped=skipped, loadavg_before=loadavg())
    attention = bench_attention(args, official_mod)
    models, diff = bench_model(args, official_mod)
    meta['loadavg_after'] = loadavg()
    result = dict(meta=meta, attention=attention, models=models, ratios=ratios(attention, models),
                  model_max_abs_diff=diff)
    md = markdown(result)
    print('\n' + md)
    out = ROOT / 'benchmarks' / 'results' / bench.device_name(args.device)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'transnext.json').write_text(json.dumps(result, indent=1) + '\n')
    (out / 'transnext.md').write_text(md)
    print(f'wrote {out / "transnext.json"} and transnext.md')


if __name__ == '__main__':
    main()
