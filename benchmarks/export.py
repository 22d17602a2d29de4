"""onnxruntime CPU latency vs eager PyTorch CPU: each zoo family's smallest model at its pretrained resolution.

Per model (the fewest-parameter variant of each family, and of each skeleton for Agent / InLine): one ONNX file
exported with a dynamic batch by the standard call (``torch.onnx.export(dynamo=True)``, the zoo's lowerings, the
exporter's default optimisation), run in onnxruntime's CPU provider with one intra-op thread against the eager
model with one torch thread, at batch 1 and 8 from that one file, in one process, eager and onnxruntime back to
back; the ratio eager / onnxruntime (> 1: onnxruntime faster) and the largest output difference relative to the
logits' scale. Times are benchmarks/_common.py's ``measure``: the median process CPU time of ``--iters`` calls
(one thread each, so other processes on the cores inflate it little).

The export is what costs (about a minute per model on one core: torch.export, the exporter's decompositions and
its ONNX optimiser; timing all batches takes seconds), so the run has two phases: first every file is exported,
each in a worker process of its own (``--jobs`` at once, killed after ``--export-timeout`` seconds), into
``--cache-dir`` (files named by the model, opset, torch / onnxscript versions and a hash of the ``ops`` and
``backbones`` sources, so a rerun on unchanged code exports nothing); then the files are timed one model after
another in this process, with no export running beside them. A model that does not export, export in time or run
is a row with its error, not a crash.

    python benchmarks/export.py [--families nat agent-deit ...] [--models nat_mini ...] [--iters 3] [--jobs 2]
                                [--cache-dir DIR] [--update]

Writes ``benchmarks/results/<device>/export.{json,md}`` (``<device>`` as benchmarks/_common.py names it);
``--update`` replaces only the measured models' rows of the existing results (each row keeps its own date and load
average), so families can be measured in several shorter runs.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import multiprocessing
import os
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

EXPORT_BATCH = 2  # the example batch: the batch axis is dynamic, any example above 1 traces the same program


def benchmark_models(families: list[str] | None = None) -> dict[str, str]:
    """Label -> model: the fewest-parameter variant of every registered family (``backbones._family.FAMILIES``),
    of each skeleton for the families on shared skeletons (``agent-deit``, ``agent-swin``, ...); only the labels
    ``families`` names (a family name stands for all its skeletons) when given."""
    from backbones._family import FAMILIES
    best: dict[str, tuple[int, str]] = {}
    for family in FAMILIES.values():
        for name, variant in family.variants.items():
            skeleton = variant.args.get('skeleton') if family.letters else None
            label = f'{family.name}-{skeleton}' if skeleton else family.name
            if families is not None and label not in families and family.name not in families:
                continue
            with torch.device('meta'):
                size = sum(p.numel() for p in timm.create_model(name).parameters())
            if label not in best or size < best[label][0]:
                best[label] = (size, name)
    return {label: best[label][1] for label in sorted(best)}


def family_labels() -> list[str]:
    """Every label :func:`benchmark_models` knows, in its order (no model is built)."""
    from backbones._family import FAMILIES
    return sorted({f'{f.name}-{v.args["skeleton"]}' if f.letters and v.args.get('skeleton') else f.name
                   for f in FAMILIES.values() for v in f.variants.values()})


def build(name: str) -> torch.nn.Module:
    """The model in eval mode with seeded random weights: the same in the export worker and in the timing
    process, so that the outputs can be compared."""
    torch.manual_seed(0)
    return timm.create_model(name).eval()


def source_key(opset: int) -> str:
    """What an exported file depends on besides the model name: opset, exporter versions, the zoo's sources."""
    import onnxscript
    digest = hashlib.sha1(f'seeded {opset} {torch.__version__} {onnxscript.__version__}'.encode())
    for path in sorted(p for folder in ('ops', 'backbones') for p in (ROOT / folder).rglob('*.py')):
        digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def export_model(name: str, path: str, opset: int) -> float:
    """Export ``name`` (eval mode, its pretrained input size, dynamic batch) to ``path``; returns the seconds taken.
    Raises when the exported file's batch is not dynamic (the model's code specialised it)."""
    model = build(name)
    x = torch.randn(EXPORT_BATCH, *model.pretrained_cfg['input_size'])
    t0 = time.perf_counter()
    program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                                opset_version=opset, input_names=['input'], output_names=['output'], verbose=False)
    seconds = time.perf_counter() - t0
    batch = program.model.graph.inputs[0].shape[0]
    if isinstance(batch, int):
        raise RuntimeError(f'the exported batch is fixed at {batch} (the model specialises it)')
    program.save(path + '.part')
    os.replace(path + '.part', path)
    return seconds


def _export_worker(name: str, path: str, opset: int, conn) -> None:
    torch.set_num_threads(1)
    try:
        conn.send(('ok', export_model(name, path, opset)))
    except Exception as e:  # noqa: BLE001  (any exporter failure is this model's result)
        conn.send(('error', f'{type(e).__name__}: {first_line(e)}'[:300]))


def export_files(models: list[str], cache: Path, opset: int, jobs: int, timeout: float) -> dict[str, dict[str, Any]]:
    """Model -> ``{'path', 'export_s'}`` (``export_s`` None: reused from the cache) or ``{'error'}``. Each export
    runs in a process of its own, at most ``jobs`` at once, each killed after ``timeout`` seconds. Export
    errors are cached beside the files (``<file>.error``), timeouts are not (they depend on the machine's load)."""
    key = source_key(opset)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for name in models:
        path = cache / f'{name}-opset{opset}-{key}.onnx'
        error = path.with_suffix('.error')
        if path.is_file():
            results[name] = dict(path=str(path), export_s=None)
        elif error.is_file():
            results[name] = dict(error=error.read_text())
        else:
            todo.append((name, path))
    # fork where there is one: the worker starts with this process's imports (a spawned one re-imports timm and the
    # zoo, 5-15 s a model); this process has run no parallel region yet, so no thread pool is forked
    context = multiprocessing.get_context('fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn')
    running: list[tuple[str, Path, Any, Any, float]] = []
    while todo or running:
        while todo and len(running) < jobs:
            name, path = todo.pop(0)
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_export_worker, args=(name, str(path), opset, send), daemon=True)
            process.start()
            send.close()
            running.append((name, path, process, receive, time.perf_counter()))
            print(f'{name}: exporting', flush=True)
        time.sleep(0.5)
        for entry in list(running):
            name, path, process, receive, start = entry
            if receive.poll():
                status, value = receive.recv()
                results[name] = dict(path=str(path), export_s=round(value, 1)) if status == 'ok' else \
                    dict(error=f'export: {value}')
                if status != 'ok':
                    path.with_suffix('.error').write_text(results[name]['error'])
            elif not process.is_alive():
                results[name] = dict(error=f'export: the worker died (exit code {process.exitcode})')
            elif time.perf_counter() - start > timeout:
                process.kill()
                results[name] = dict(error=f'export: did not finish within {timeout:.0f} s')
            else:
                continue
            process.join()
            running.remove(entry)
            done = results[name]
            print(f'{name}:', done['error'] if 'error' in done else f"exported in {done['export_s']:.0f} s", flush=True)
    return results


def _session(path: str):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def model_rows(label: str, name: str, exported: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows (one per batch) of one model: eager ms, onnxruntime ms, their ratio, the output difference."""
    model = build(name)
    size = model.pretrained_cfg['input_size']
    base = dict(family=label, model=name, img_size=size[-1], date=time.strftime('%Y-%m-%d %H:%M'),
                params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
    if 'error' in exported:
        return [dict(base, batch=b, error=exported['error']) for b in args.batches]
    try:
        session = _session(exported['path'])
    except Exception as e:  # noqa: BLE001
        return [dict(base, batch=b, error=f'onnxruntime session: {first_line(e)}') for b in args.batches]
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
        feed = {session.get_inputs()[0].name: x.numpy()}
        load = os.getloadavg()[0]
        try:
            with torch.inference_mode():
                ref = model(x)
                eager = _common.measure(lambda x=x: model(x), args.device, args.iters, args.warmup, False)
            got = torch.from_numpy(session.run(None, feed)[0])
            onnx = _common.measure(lambda feed=feed: session.run(None, feed), args.device, args.iters, args.warmup,
                                   False)
        except Exception as e:  # noqa: BLE001
            rows.append(dict(base, batch=batch, error=f'run: {type(e).__name__}: {first_line(e)}'[:300]))
            continue
        rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
        rows.append(dict(base, batch=batch, export_s=exported['export_s'], eager_ms=round(eager['ms'], 2),
                         onnx_ms=round(onnx['ms'], 2), ratio=round(eager['ms'] / onnx['ms'], 3), max_rel_diff=rel,
                         load=round(load, 1)))
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# onnxruntime vs eager PyTorch on {meta['device']}", '',
             f"torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, onnxscript {meta['onnxscript']}, timm "
             f"{meta['timm']}, opset {meta['opset']}. One ONNX file per model with a dynamic batch "
             f"(`torch.onnx.export(dynamo=True)`, default optimisation), run at batch 1 and 8; one thread each "
             f"(torch; onnxruntime intra- and inter-op), median process CPU time of {meta['iters']} calls after "
             f"{meta['warmup']} warm-up. Ratio = eager / onnxruntime (> 1: onnxruntime faster); diff = max |onnx - "
             "eager| / max |eager|; export = seconds of `torch.onnx.export` (`cached`: file reused). The machine "
             f"was shared (load = the 1-minute load average when the row was timed; load {meta['loadavg_before']} "
             'before the last run): CPU time, not wall time, so the load inflates neither side much, but the '
             'numbers are noisy; ratios within a row (eager and onnxruntime back to back) say more than ms.', '',
             '| family | model | size | params (M) | batch | eager ms | onnxruntime ms | ratio | diff | export s | '
             'load | measured |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for r in rows:
        lead = f"| {r['family']} | {r['model']} | {r['img_size']} | {r['params_m']} | {r['batch']} |"
        if 'error' in r:
            lines.append(f"{lead} - | - | - | - | - | - | {r['date']} |")
        else:
            export = 'cached' if r['export_s'] is None else f"{r['export_s']:.0f}"
            lines.append(f"{lead} {r['eager_ms']:.1f} | {r['onnx_ms']:.1f} | {r['ratio']:.2f} | "
                         f"{r['max_rel_diff']:.1e} | {export} | {r['load']} | {r['date']} |")
    errors = {}
    for r in rows:
        if 'error' in r:
            errors.setdefault(r['error'], []).append(f"{r['model']} b{r['batch']}")
    if errors:
        lines += ['', 'Not measured:', '']
        lines += [f"- {', '.join(where)}: {error.replace('|', '/')}" for error, where in errors.items()]
    return '\n'.join(lines) + '\n'


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """The old results' rows with those of the newly measured models replaced, in ``order`` of families."""
    measured = {r['model'] for r in new}
    rows = [r for r in old if r['model'] not in measured] + new
    rank = {label: i for i, label in enumerate(order)}
    return sorted(rows, key=lambda r: (rank.get(r['family'], len(rank)), r['family'], r['batch']))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--families', nargs='*', default=None, metavar='FAMILY',
                        help='families to measure (e.g. nat agent-deit; "agent" = every Agent skeleton); default all')
    parser.add_argument('--models', nargs='*', default=None, help='models to measure instead of families')
    parser.add_argument('--batches', nargs='*', type=int, default=[1, 8])
    parser.add_argument('--opset', type=int, default=18)
    parser.add_argument('--jobs', type=int, default=1, help='exports at once (one worker process each)')
    parser.add_argument('--export-timeout', type=float, default=300, metavar='S', help='per model')
    parser.add_argument('--cache-dir', default=None, help='keep the exported files here (default: a temporary dir)')
    parser.add_argument('--update', action='store_true', help="replace only these models' rows in the results")
    _common.add_run_args(parser, iters=3, amp_help=None)
    args = parser.parse_args(argv)
    import onnxruntime
    import onnxscript
    torch.set_num_threads(1)
    args.device, args.amp_dtype = torch.device('cpu'), 'float32'
    labels = family_labels()
    if args.models:
        unknown = [m for m in args.models if not timm.is_model(m)]
        if unknown:
            parser.error(f'unknown models {unknown}')
        chosen = {m: m for m in args.models}
    else:
        unknown = [f for f in args.families or () if not any(lb == f or lb.startswith(f + '-') for lb in labels)]
        if unknown:
            parser.error(f"unknown families {unknown}; known: {', '.join(labels)}")
        chosen = benchmark_models(args.families)
    meta = _common.run_meta(args, onnxruntime=onnxruntime.__version__, onnxscript=onnxscript.__version__,
                            opset=args.opset, batches=args.batches)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or tmp)
        cache.mkdir(parents=True, exist_ok=True)
        exported = export_files(list(chosen.values()), cache, args.opset, args.jobs, args.export_timeout)
        rows = []
        for label, name in chosen.items():
            rows += model_rows(label, name, exported[name], args)
            gc.collect()
            print(*(f"{r['model']} b{r['batch']}: " + (r['error'] if 'error' in r else
                    f"eager {r['eager_ms']:.1f} ms, onnxruntime {r['onnx_ms']:.1f} ms, ratio {r['ratio']:.2f}")
                    for r in rows[-len(args.batches):]), sep='\n', flush=True)
    meta['loadavg_after'] = _common.loadavg()
    out = _common.RESULTS / _common.device_name(args.device) / 'export.json'
    if args.update and out.is_file():
        rows = merge_rows(json.loads(out.read_text())['rows'], rows, labels)
    result = dict(meta=meta, rows=rows)
    _common.write_results('export', result, markdown(rows, meta), args.device)
    return result


if __name__ == '__main__':
    main()
