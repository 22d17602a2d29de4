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

Timing and memory are benchmarks/_common.py's ``measure``: on CUDA, CUDA-event medians and ``max_memory_allocated``
(the attention rows in fp32; model rows under ``--amp-dtype``, default bf16); on CPU, the median process CPU time
with one torch thread and the resident-set growth during one call. The CUDA path of the official code
(``swattention``) is not benchmarked: it is a separate CUDA extension that must be built.

    python benchmarks/transnext.py --official /path/to/TransNeXt [--sizes 224 1024] [--device cuda]

Writes ``benchmarks/results/<device>/transnext.{json,md}`` (``<device>`` as benchmarks/_common.py names it).
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tools'))


import _parity  # noqa: E402  (tools/: our model built and loaded as the parity scripts do)

from backbones.transnext import AggregatedAttention  # noqa: E402
from benchmarks import _common as bench  # noqa: E402
from ops import transnext_stage_tables as stage_tables  # noqa: E402

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
                    bench.free_memory(args.device, collect=True)
                rows.append(row)
                print(row, flush=True)
    return rows


def bench_model(args: argparse.Namespace, official_mod: Any) -> tuple[list[dict[str, Any]], float | None]:
    torch.manual_seed(0)
    ours = _parity.ours(MODEL)
    models, diff = {'ours': ours}, None
    if official_mod is not None:
        from transnext_official_parity import perturb_
        official = official_mod.transnext_micro(img_size=MODEL_SIZE).eval()
        perturb_(official, torch.Generator().manual_seed(0))
        _parity.load_official_(ours, official.state_dict())
        diff = bench.logit_difference(official, ours, MODEL_SIZE, f'{MODEL} @ {MODEL_SIZE}')
        models['official'] = official
        del official
    del ours
    rows = [bench.model_row(models.pop(name), args, args.model_batch, MODEL_SIZE, impl=name, model=MODEL,
                            img_size=MODEL_SIZE) for name in list(models)]
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
    lines = bench.intro('TransNeXt vs the official code', result['meta'], 'fp32 attention rows; random inputs.',
                        'resident-set growth during one iteration')
    lines += ['', '## Aggregated attention at transnext_micro shapes', '',
              '| stage | impl | input | map | batch | fwd ms | fwd MB | fwd+bwd ms | fwd+bwd MB |',
              '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in result['attention']:
        lines.append(f"| {r['stage']} | {r['impl']} | {r['input']} | {r['map']} | {r['batch']} | {r['fwd_ms']} | "
                     f"{r['fwd_mb']} | {r['fwd_bwd_ms']} | {r['fwd_bwd_mb']} |")
    lines += bench.model_table(f'{MODEL} at {MODEL_SIZE}: inference and training (forward + backward + AdamW step)',
                               result['models'], {'impl': 'impl', 'params (M)': 'params_m'})
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
    bench.add_run_args(parser)
    args = parser.parse_args()
    bench.prepare_run(args, channels_last=False)
    skipped = [] if args.official else ['official rows and ratios (no --official)']
    official_mod = None
    if args.official:
        from transnext_official_parity import official_module
        official_mod = official_module(args.official)  # transnext.py; its AggregatedAttention is the native one
    meta = bench.run_meta(args, skipped=skipped)
    attention = bench_attention(args, official_mod)
    models, diff = bench_model(args, official_mod)
    meta['loadavg_after'] = bench.loadavg()
    result = dict(meta=meta, attention=attention, models=models, ratios=ratios(attention, models),
                  model_max_abs_diff=diff)
    bench.write_results('transnext', result, markdown(result), args.device)


if __name__ == '__main__':
    main()
