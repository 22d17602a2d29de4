"""onnxruntime CPU latency vs eager PyTorch CPU: each zoo family's smallest model at its pretrained resolution.

Per model: one ONNX file exported with a dynamic batch (``torch.onnx.export(dynamo=True)``, the zoo's lowerings),
run in onnxruntime's CPU provider with one intra-op thread, against the eager model with one torch thread, at batch
1 and 8, in the same process one after the other; the ratio eager / onnxruntime (> 1: onnxruntime faster) and the
largest output difference relative to the logits' scale. Times are benchmarks/_common.py's ``measure``: the median
process CPU time (one thread each, so other processes on the cores do not inflate it). A model that does not export
or run is a row with its error, not a crash; ``--time-budget`` skips what is left once spent (recorded as such).

    python benchmarks/export.py [--models nat_mini ravlt_tiny] [--batches 1 8] [--iters 5] [--time-budget 1200]

Writes ``benchmarks/results/<device>/export.{json,md}`` (``<device>`` as benchmarks/_common.py names it).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import timm  # noqa: E402

import backbones  # noqa: E402,F401
from benchmarks import _common  # noqa: E402
from zoo_common import first_line  # noqa: E402


def smallest_per_family() -> list[str]:
    """The fewest-parameter variant of every registered zoo family (``backbones._family.FAMILIES``)."""
    from backbones._family import FAMILIES
    best = []
    for family in FAMILIES.values():
        with torch.device('meta'):
            sizes = {v: sum(p.numel() for p in timm.create_model(v).parameters()) for v in family.variants}
        best.append(min(sizes, key=sizes.get))
    return sorted(best)


def _session(path: str):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def model_rows(name: str, args: argparse.Namespace, workdir: str) -> list[dict[str, Any]]:
    """Rows (one per batch) of one model: eager ms, onnxruntime ms, their ratio, the output difference."""
    model = timm.create_model(name).eval()
    size = model.pretrained_cfg['input_size']
    base = dict(model=name, img_size=size[-1], params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
    path = str(Path(workdir) / f'{name}.onnx')
    t0 = time.perf_counter()
    try:
        x = torch.randn(1, *size)
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim.AUTO},),
                                    input_names=['input'], output_names=['output'], verbose=False)
        program.save(path)
        session = _session(path)
    except Exception as e:  # noqa: BLE001  (any exporter failure is this model's result)
        return [dict(base, batch=b, error=f'export: {first_line(e)}') for b in args.batches]
    export_s = time.perf_counter() - t0
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
        feed = {session.get_inputs()[0].name: x.numpy()}
        try:
            with torch.inference_mode():
                ref = model(x)
                eager = _common.measure(lambda x=x: model(x), args.device, args.iters, args.warmup, False)
            got = torch.from_numpy(session.run(None, feed)[0])
            onnx = _common.measure(lambda feed=feed: session.run(None, feed), args.device, args.iters, args.warmup,
                                   False)
        except Exception as e:  # noqa: BLE001
            rows.append(dict(base, batch=batch, error=f'run: {first_line(e)}'))
            continue
        rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
        rows.append(dict(base, batch=batch, export_s=round(export_s, 1), eager_ms=round(eager['ms'], 2),
                         onnx_ms=round(onnx['ms'], 2), ratio=round(eager['ms'] / onnx['ms'], 3), max_rel_diff=rel))
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], skipped: list[str]) -> str:
    lines = [f"# onnxruntime vs eager PyTorch on {meta['device']}", '',
             f"torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, timm {meta['timm']}, {meta['date']}; one "
             f"thread each (torch and onnxruntime intra-op), median process CPU time of {meta['iters']} calls after "
             f"{meta['warmup']} warm-up; load average {meta['loadavg_before']} before the run (the machine was shared:"
             ' CPU time, not wall time, so the load inflates neither side much). Ratio = eager / onnxruntime '
             '(> 1: onnxruntime faster); diff = max |onnx - eager| / max |eager|.', '',
             '| model | size | params (M) | batch | eager ms | onnxruntime ms | ratio | diff |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r['model']} | {r['img_size']} | {r['params_m']} | {r['batch']} | - | - | - | "
                         f"{r['error'][:90]} |")
        else:
            lines.append(f"| {r['model']} | {r['img_size']} | {r['params_m']} | {r['batch']} | {r['eager_ms']:.1f} | "
                         f"{r['onnx_ms']:.1f} | {r['ratio']:.2f} | {r['max_rel_diff']:.1e} |")
    if skipped:
        lines += ['', f'Not measured ({_common.TIME_BUDGET}): ' + ', '.join(skipped)]
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='*', default=None, help='default: every family\'s smallest model')
    parser.add_argument('--batches', nargs='*', type=int, default=[1, 8])
    parser.add_argument('--time-budget', type=float, default=None, metavar='S',
                        help='skip the models left once this many seconds are spent')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (onnxruntime always one)')
    _common.add_run_args(parser, iters=5, amp_help=None)
    args = parser.parse_args(argv)
    import onnxruntime
    torch.set_num_threads(args.threads)
    args.device, args.amp_dtype = torch.device('cpu'), 'float32'
    models = args.models or smallest_per_family()
    meta = _common.run_meta(args, onnxruntime=onnxruntime.__version__, batches=args.batches)
    rows, skipped, start = [], [], time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for name in models:
            if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
                skipped.append(name)
                continue
            rows += model_rows(name, args, workdir)
            print(*(f"{r['model']} b{r['batch']}: " + (r['error'] if 'error' in r else
                    f"eager {r['eager_ms']:.1f} ms, onnxruntime {r['onnx_ms']:.1f} ms, ratio {r['ratio']:.2f}")
                    for r in rows[-len(args.batches):]), sep='\n', flush=True)
    meta['loadavg_after'] = _common.loadavg()
    result = dict(meta=meta, rows=rows, skipped=skipped)
    _common.write_results('export', result, markdown(rows, meta, skipped), args.device)
    return result


if __name__ == '__main__':
    main()
