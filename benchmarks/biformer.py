"""Benchmark the whole BiFormer-S against the official code: inference and training img/s with peak memory.

* ``biformer_small`` at 224 with the classification setting (``n_win=7``), and at a detection-sized input
  (default 512 on CPU, 1024 on CUDA) with the detection setting (``n_win=16``; the official model with
  ``auto_pad=True``, as its detection backbone); inference (eval forward) and training (forward, cross-entropy,
  backward, AdamW step), ours vs the official model holding the SAME weights (the official random init, moved off
  its init by tools/biformer_official_parity.py's ``perturb_``, mapped through our checkpoint fit; the fp32
  logit difference is recorded as a check). Drop path 0 in both.
* Ours runs BRA through :func:`ops.region_routing` + :func:`ops.routed_attention` (the backend dispatch picks: the
  bounded-memory ``torch`` backend on CPU); the official ``BiLevelRoutingAttention`` gathers the ``topk`` routed
  regions' keys and values into a ``topk``-fold copy (``KVGather``) before a dense attention per region.
  The op-level comparison at the stage shapes is benchmarks/routed.py.

Timing and memory are benchmarks/_common.py's ``measure``: on CUDA, per-iteration CUDA-event medians and
``max_memory_allocated``, bf16 autocast and channels-last (``--amp-dtype``); on CPU, the median process CPU time
with one torch thread (else wall time) and the resident-set growth during one call.

The official code runs from a BiFormer checkout (``--official-repo``; needs ``einops``) with
tools/biformer_official_parity.py's shims. Without ``--official-repo`` only our rows are measured and the skipped
parts are listed.

    OMP_NUM_THREADS=1 python benchmarks/biformer.py --official-repo /path/to/BiFormer [--sizes 224 512] [--device cuda]

Writes ``benchmarks/results/<device>/biformer.{json,md}`` (``<device>`` as benchmarks/_common.py names it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tools'))


import _parity  # noqa: E402  (tools/: our model built and loaded as the parity scripts do)

from benchmarks import _common as bench  # noqa: E402

MODEL = 'biformer_small'
CLS_SIZE, CLS_WIN, DET_WIN = 224, 7, 16


def n_win_for(size: int) -> int:
    """The official setting: 7 regions per side for ImageNet at 224, 16 for detection inputs."""
    return CLS_WIN if size == CLS_SIZE else DET_WIN


def build_pair(size: int, official_repo: Path | None) -> tuple[dict[str, torch.nn.Module], float | None]:
    """Our model and (with the official code) the official one with the same weights, for ``size``'s n_win."""
    n_win = n_win_for(size)
    torch.manual_seed(0)
    ours = _parity.ours(MODEL, n_win=n_win)
    models, diff = {'ours': ours}, None
    if official_repo is not None:
        from biformer_official_parity import enable_auto_pad_, official_modules, perturb_
        official = official_modules(official_repo)[0].biformer_small().eval()
        enable_auto_pad_(official)
        for m in official.modules():  # the official entrypoint fixes n_win=7; BRA reads it at every forward
            if hasattr(m, 'n_win'):
                m.n_win = n_win
        perturb_(official, torch.Generator().manual_seed(0))
        _parity.load_official_(ours, official.state_dict())
        diff = bench.logit_difference(official, ours, size, f'{MODEL} n_win={n_win} @ {size}', batch=1)
        models['official (gather)'] = official
    return models, diff


def bench_size(size: int, args: argparse.Namespace) -> tuple[list[dict[str, Any]], float | None]:
    models, diff = build_pair(size, args.official_repo)
    batch = max(1, round(args.model_batch * (CLS_SIZE / size) ** 2))
    # each model dropped after its rows: the next model's peak excludes it
    rows = [bench.model_row(models.pop(name), args, batch, size, rounding=lambda v: float(f'{v:.4g}'), impl=name,
                            model=MODEL, img_size=size, n_win=n_win_for(size)) for name in list(models)]
    return rows, diff


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per input size, ours / official: img/s (> 1: ours faster) and peak MB (< 1: ours smaller), per mode."""
    out = {}
    for size in sorted({r['img_size'] for r in rows}):
        by = {r['impl']: r for r in rows if r['img_size'] == size}
        if 'official (gather)' not in by:
            continue
        out[str(size)] = bench.pair_ratios(by['ours'], by['official (gather)'])
    return out


def markdown(result: dict[str, Any]) -> str:
    meta = result['meta']
    lines = bench.intro('BiFormer-S vs the official code', meta,
                        f"AMP {meta['amp_dtype']}, channels-last {meta['channels_last']}. Random inputs. Ours: BRA "
                        f"through ops.region_routing + ops.routed_attention ({meta['routed_backend']} backend); "
                        'official: its KVGather (a topk-fold copy of the routed keys/values) + dense attention per '
                        'region.',
                        'resident-set growth during one iteration, above weights, inputs and optimizer state')
    # img/s to 3 digits: the official 512 training runs at 0.04
    lines += bench.model_table(f'{MODEL}: inference and training (forward + backward + AdamW step)',
                               result['models'], {'impl': 'impl', 'input': 'img_size', 'n_win': 'n_win'},
                               img_s_format='.3g')
    for size, rat in result['ratios'].items():
        if rat:
            lines += ['', f'Ours / official at {size} (img/s > 1: ours faster; memory < 1: ours smaller): ' + ', '.join(
                f'{k} {v:.2f}' for k, v in rat.items()) + '.']
    diffs = {k: v for k, v in result['max_abs_diff'].items() if v is not None}
    if diffs:
        lines += ['', 'Same weights: max abs fp32 logit difference ' + ', '.join(
            f'{v:.1e} at {k}' for k, v in diffs.items()) + ' (one random image).']
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--official-repo', '--official', type=Path, help='checkout of github.com/rayleizhu/BiFormer')
    parser.add_argument('--sizes', type=int, nargs='+', help=f'input sizes ({CLS_SIZE}: n_win {CLS_WIN}; others: '
                        f'n_win {DET_WIN}); default 224 and 512 on CPU, 224 and 1024 on CUDA')
    parser.add_argument('--model-batch', type=int, help=f'batch at {CLS_SIZE} (scaled by (224 / size)^2, >= 1; '
                        'default: 64 on CUDA, 4 on CPU; halved on CUDA out-of-memory)')
    bench.add_run_args(parser, amp_help='')
    args = parser.parse_args()
    on_gpu = bench.prepare_run(args, model_batch_gpu=64)
    args.sizes = args.sizes or [CLS_SIZE, 1024 if on_gpu else 512]
    skipped = []
    if args.official_repo is None:
        skipped = ['official BiFormer-S rows and ratios (no --official-repo)']
        print('skipping ' + skipped[0], flush=True)
    elif not on_gpu and not args.cpu_memory:
        skipped = ['CPU peak memory (no /proc/self/clear_refs)']
    import ops
    backend = ops.available_backends(args.device, 'routed')[0]  # the automatic dispatch's first choice
    meta = bench.run_meta(args, channels_last=args.channels_last, skipped=skipped, routed_backend=backend)
    rows, diffs = [], {}
    for size in args.sizes:
        size_rows, diffs[str(size)] = bench_size(size, args)
        rows += size_rows
    meta['loadavg_after'] = bench.loadavg()
    result = dict(meta=meta, models=rows, ratios=ratios(rows), max_abs_diff=diffs)
    bench.write_results('biformer', result, markdown(result), args.device)


if __name__ == '__main__':
    main()
