"""Benchmark whole models: inference and training throughput and peak memory, and backbone-only inference at 1024.

For every model, in one run and under the same settings:

* ``infer``: eval-mode forward of a random batch at 224 (or the model's native resolution), img/s and peak memory;
* ``train``: one training step (forward, cross-entropy, backward, AdamW step), img/s and peak memory;
* ``backbone``: ``forward_features`` (no head) of a 1024x1024 batch (``--backbone-size``), as a dense-prediction
  backbone runs.

Zoo models are compared with timm's ``swin_tiny_patch4_window7_224``, ``convnext_tiny`` and ``maxvit_tiny_tf_224``
measured in the same run; a zoo model whose weights are a timm model's (``maxvit_na_*_tf_*`` <- ``maxvit_*_tf_*``)
also gets that timm "twin", and both hold the SAME weights (the twin's random init mapped through the zoo model's
``backbones.checkpoint.fit``; the fp32 output difference is recorded as a check).

GPU: autocast (bf16 by default), channels-last, per-iteration CUDA events, median over ``--iters`` after
``--warmup`` iterations, peak = ``torch.cuda.max_memory_allocated`` (weights, optimizer state and activations);
a batch that does not fit is halved until it does. CPU: median process CPU time with one torch thread (immune to
other processes on the cores), else wall-clock time, with the ordinary allocator (freed memory reused, as in a
user's process); peak = growth of the resident set during one call (above weights, inputs and optimizer state),
that call with freed memory returned to the OS; backbone runs only with ``--full``. ``--rounds N`` (CPU default 5)
keeps every model built and takes each mode's timed iterations in N rounds over all models in turn, the median over
the rounds: a change of the machine's load during the run then hits every model alike instead of whichever ran at
the time.

    python benchmarks/models.py                                     # every zoo model (that fits) + peers
    python benchmarks/models.py --models dinat_tiny,maxvit_na_tiny_tf_224   # the issue's two targets
    python benchmarks/models.py --short --time-budget 100   # the GPU suite's part: those four, train + infer
    python benchmarks/models.py --models swin_tiny_patch4_window7_224,nat_tiny,dinat_tiny --no-peers \
        --batch-size 4 --train-batch-size 2 --threads 1          # issue #26: NAT / DiNAT vs Swin-T on CPU

Writes ``benchmarks/results/<device>/models.{json,md,png}`` (the JSON after every model, so a run stopped from
outside keeps what it measured).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's `ops`, not benchmarks/ops.py

import timm  # noqa: E402

import backbones  # noqa: E402,F401  (registers the zoo with timm)
from backbones.checkpoint import fit  # noqa: E402
from benchmarks._common import (  # noqa: E402
    AMP_DTYPES,
    RESULTS,
    TIME_BUDGET,
    cpu_memory_tracking,
    cpu_name,
    device_name,
    free_memory,
    keep_freed_memory,
    measure,
    releasing_freed_memory,
    run_mode,
    step_fn,
    time_calls,
)
from zoo_common import CliError, first_line, run_cli  # noqa: E402

PEERS = ('swin_tiny_patch4_window7_224', 'convnext_tiny', 'maxvit_tiny_tf_224')
# --short: the two targets (MaxViT-T vs timm's with the same weights, DiNAT-T vs Swin-T), most important first
SHORT_MODELS = 'maxvit_na_tiny_tf_224,maxvit_tiny_tf_224,dinat_tiny,swin_tiny_patch4_window7_224'
RATIO_PEERS = ('swin_tiny_patch4_window7_224', 'convnext_tiny')  # every zoo model is compared with these
MODES = ('infer', 'train', 'backbone')
SEED = 0


# --- model selection ---------------------------------------------------------------------------------------------

def is_zoo(name: str) -> bool:
    """True for a model registered by ``import backbones`` (as opposed to one of timm's own)."""
    return timm.models.model_entrypoint(name).__module__.startswith('backbones.')


def zoo_models() -> list[str]:
    return [n for n in timm.list_models() if is_zoo(n)]


def timm_twin(name: str) -> str | None:
    """The timm model whose weights a zoo model loads (from its pretrained cfg's ``timm/<arch>`` hub id), if any."""
    if not is_zoo(name):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = (cfg.hf_hub_id or '') if cfg is not None else ''
    if not hub_id.startswith('timm/'):
        return None
    arch = hub_id[len('timm/'):].split('.')[0]
    return arch if timm.is_model(arch) and not is_zoo(arch) else None


@functools.cache
def _meta_model(name: str) -> nn.Module:
    """The model built on the meta device: no memory, no init cost."""
    with torch.device('meta'):
        return timm.create_model(name)


def param_count(name: str) -> int:
    return sum(p.numel() for p in _meta_model(name).parameters())


def native_size(name: str) -> int:
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.input_size[-1] if cfg is not None else 224


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    import difflib
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f' (did you mean {", ".join(close)}?)' if close else ''
    raise CliError(f'--models {name}: unknown model{hint}')


def resolve_models(spec: str | None, max_params_m: float, peers: bool) -> list[str]:
    """Names to benchmark: ``spec`` (comma-separated names or ``timm.list_models`` wildcards; default every zoo
    model), wildcard/default matches limited to ``max_params_m`` million parameters, then the peers and the timm
    twins of the zoo models. Unknown names raise :class:`CliError` before anything runs."""
    names = []
    parts = [p.strip() for p in (spec or '').split(',') if p.strip()]
    if spec is not None and not parts:
        raise CliError('--models: no model given')
    for part in parts or [None]:
        if part is None or any(c in part for c in '*?['):
            matched = zoo_models() if part is None else timm.list_models(part)
            if not matched:
                raise CliError(f'--models {part}: no registered model matches')
            names += [n for n in matched if math.isinf(max_params_m) or param_count(n) <= max_params_m * 1e6]
        else:
            _check_name(part)
            names.append(part)
    twins = [t for t in map(timm_twin, names) if t]
    return list(dict.fromkeys((list(PEERS) if peers else []) + names + twins))


# --- building ----------------------------------------------------------------------------------------------------

def _accepts_img_size(name: str) -> bool:
    return 'img_size' in inspect.signature(type(_meta_model(name))).parameters


def build(name: str, img_size: int | None) -> tuple[nn.Module, dict[str, Any], nn.Module | None]:
    """Seeded model (built for ``img_size`` when its class takes one and it differs from the native size), the
    kwargs used, and for a zoo model with a timm twin that twin, whose weights the model now holds."""
    native = native_size(name)
    kwargs = {}
    if img_size is not None and img_size != native and _accepts_img_size(name):
        kwargs['img_size'] = img_size
    torch.manual_seed(SEED)
    model = timm.create_model(name, **kwargs)
    twin_name = timm_twin(name)
    if twin_name is None:
        return model, kwargs, None
    torch.manual_seed(SEED)  # the same seed as when the twin itself is benchmarked: identical weights
    twin = timm.create_model(twin_name, num_classes=model.num_classes, **kwargs)
    model.load_state_dict(fit(twin.state_dict(), model), strict=True)
    return model, kwargs, twin


@torch.no_grad()
def twin_difference(model: nn.Module, twin: nn.Module, img_size: int, device: torch.device) -> dict[str, float]:
    """fp32 eval outputs of a zoo model and its timm twin on one random image: max abs and relative L2 difference."""
    x = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(SEED)).to(device)
    out = model.to(device).eval()(x).float()
    ref = twin.to(device).eval()(x).float()
    return {'max_abs': (out - ref).abs().max().item(), 'rel_l2': ((out - ref).norm() / ref.norm()).item()}


def _prepare(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    model = model.to(args.device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def build_row(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], nn.Module]:
    """A model's row (name, parameters, same-weights check against its timm twin) and the model, on the device."""
    img_size = args.img_size or native_size(name)
    row: dict[str, Any] = {'model': name, 'zoo': is_zoo(name), 'twin': timm_twin(name), 'img_size': img_size}
    model, kwargs, twin = build(name, args.img_size)
    row['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
    row['kwargs'] = kwargs
    if twin is not None:
        row['twin_diff_fp32'] = twin_difference(model, twin, img_size, args.device)
        del twin
    return row, _prepare(model, args)


def _batch(mode: str, args: argparse.Namespace) -> int:
    return args.train_batch_size or args.batch_size if mode == 'train' else args.batch_size


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """All requested measurements of one model (a fresh seeded instance per resolution)."""
    row, model = build_row(name, args)
    for mode in ('infer', 'train')[:1 if args.skip_train else 2]:
        row[mode] = run_mode(model, mode, _batch(mode, args), row['img_size'], args)
    if not args.skip_1024:
        model = backbone_model(row, model, args)
        row['backbone'] = run_mode(model, 'backbone', args.batch_size_1024, args.backbone_size, args)
    del model
    free_memory(args.device, collect=args.device.type == 'cuda')  # the next model's peak must not include this one
    return row


def backbone_model(row: dict[str, Any], model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """The model of the backbone-only run: ``model``, or one built for ``--backbone-size`` if its class takes
    ``img_size`` (e.g. MaxViT's partition)."""
    name, size = row['model'], args.backbone_size
    if _accepts_img_size(name) and row['kwargs'].get('img_size') != size:
        model, row['kwargs_backbone'], _ = build(name, size)
        model = _prepare(model, args)
    return model


def measure_rounds(entries: list[tuple[dict[str, Any], nn.Module]], mode: str, args: argparse.Namespace,
                   out_of_time: Callable[[], bool]) -> None:
    """``mode`` of every model into its row, in ``args.rounds`` rounds over all models in turn: each model's step
    is built once, round 1 takes its warm-up, peak memory and first ``--iters``, every later round ``--iters`` more;
    ``ms`` / ``img_s`` are the median over the rounds (``rounds_ms``). A round is not started once ``out_of_time()``;
    a model that fails is recorded with its error and left out of later rounds."""
    batch, fns = _batch(mode, args), {}
    for rnd in range(args.rounds):
        if rnd and out_of_time():
            break
        for row, model in entries:
            name = row['model']
            if rnd and name not in fns:
                continue
            try:
                if rnd == 0:
                    fns[name] = step_fn(model, mode, batch, row['img_size'], args)
                    res = measure(fns[name], args.device, args.iters, args.warmup, args.cpu_memory)
                    row[mode] = {'batch': batch, 'img_size': row['img_size'], **res, 'rounds_ms': []}
                else:
                    res = time_calls(fns[name], args.device, args.iters)
                row[mode]['rounds_ms'].append(res['ms'])
            except Exception as e:  # noqa: BLE001  (reported in the results)
                fns.pop(name, None)
                row[mode] = {'batch': batch, 'img_size': row['img_size'],
                             'error': f'{type(e).__name__}: {first_line(e)[:200]}'}
            finally:
                free_memory(args.device)
    for row, _ in entries:
        res = row[mode]
        if 'rounds_ms' in res:
            res['ms'] = statistics.median(res['rounds_ms'])
            res['img_s'] = batch / res['ms'] * 1e3


# --- reporting ---------------------------------------------------------------------------------------------------

def _get(row: dict[str, Any], mode: str, key: str) -> float | None:
    value = row.get(mode, {}).get(key)
    return value if isinstance(value, (int, float)) and value >= 0 else None


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Zoo model / peer for every zoo model against its timm twin and the fixed peers measured in the same run:
    throughput ratios (> 1: ours faster) and peak-memory ratios (< 1: ours smaller)."""
    by_name = {r['model']: r for r in rows}
    out = []
    for r in rows:
        if not r['zoo']:
            continue
        for peer in dict.fromkeys([r['twin'], *RATIO_PEERS]):
            p = by_name.get(peer)
            if p is None:
                continue
            entry = {'model': r['model'], 'peer': peer, 'same_weights': peer == r['twin']}
            for mode in MODES:
                for key in ('img_s', 'peak_mb'):
                    a, b = _get(r, mode, key), _get(p, mode, key)
                    entry[f'{mode}_{key}'] = a / b if a is not None and b else None
            out.append(entry)
    return out


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's two GPU targets, as far as this run measured them."""
    by_name = {r['model']: r for r in rows}
    lines = []
    pairs = [('maxvit_na_tiny_tf_224', 'maxvit_tiny_tf_224', ('infer', 'train'),
              "our MaxViT-T at least as fast as timm's with the same weights"),
             ('dinat_tiny', 'swin_tiny_patch4_window7_224', ('train',),
              "DiNAT-T training throughput at least Swin-T's")]
    for ours, peer, modes, text in pairs:
        if ours not in by_name or peer not in by_name:
            lines.append(f'- {text}: not measured in this run ({ours} and {peer} both needed).')
            continue
        parts, met = [], True
        for mode in modes:
            a, b = _get(by_name[ours], mode, 'img_s'), _get(by_name[peer], mode, 'img_s')
            parts.append(f'{mode} {a / b:.2f}x' if a and b else f'{mode} not measured')
            met = met and bool(a and b) and a >= b
        lines.append(f'- {text}: {ours} / {peer} = {", ".join(parts)} -> {"met" if met else "NOT met"}.')
    return lines


def _fmt(row: dict[str, Any], mode: str) -> list[str]:
    res = row.get(mode)
    if res is None:
        return ['-', '-', '-']
    if 'error' in res:
        return [str(res['batch']), res['error'].replace('|', '/'), '-']
    peak = f"{res['peak_mb']:.0f}" if res['peak_mb'] >= 0 else 'n/a'
    img_s = res['img_s']
    return [str(res['batch']), f'{img_s:.1f}' if img_s >= 10 else f'{img_s:.3g}', peak]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    s = meta['settings']
    on_gpu = meta['device_type'] == 'cuda'
    timing = ('median of per-iteration CUDA-event times' if on_gpu else 'median process CPU time per iteration, '
              'which other processes on the cores do not inflate' if meta['threads'] == 1 else
              'median wall-clock time per iteration')
    if not on_gpu and meta.get('allocator') == 'ordinary':
        timing += ', with the ordinary allocator'
    memory = ('peak `torch.cuda.max_memory_allocated` (weights, inputs, optimizer state and activations)' if on_gpu
              else 'growth of the resident set during one iteration, above weights, inputs and optimizer state')
    bb = f"{s['backbone_size']}"
    rounds = s.get('rounds', 1)
    iterations = (f"{s['warmup']} warm-up + {s['iters']} timed iterations ({timing})" if rounds == 1 else
                  f"{s['warmup']} warm-up + {s['iters']} timed iteration(s) per round in {rounds} rounds over all "
                  f"models in turn ({timing}; the median over the rounds, so load changes hit every model alike)")
    lines = [f"# Model benchmark on {meta['device']}", '',
             f"torch {meta['torch']}, timm {meta['timm']}, triton {meta['triton']}; {meta['date']}. "
             f"AMP {s['amp_dtype']}, channels-last {s['channels_last']}, compile {s['compile']}, "
             f"{iterations}; memory: {memory} (MB). "
             f'Random inputs. `train` = forward + cross-entropy + backward + AdamW step; `{bb}` = '
             f'`forward_features` (backbone only) of {bb}x{bb} inputs (models taking `img_size` are built for it, '
             f"e.g. MaxViT's partition becomes {bb}/32). Zoo models with a timm twin hold the twin's weights.", '']
    if s['skip_1024']:
        lines += [f'The backbone-only {bb} run was skipped' + ('' if on_gpu else ' (CPU default; `--full` runs it)')
                  + '.', '']
    if not on_gpu:
        lines += [f"CPU: {meta['threads']} torch thread(s); load average {meta['loadavg_before']} before and "
                  f"{meta['loadavg_after']} after the run. Absolute CPU numbers say little; ratios in the same run "
                  'say more, and the targets are GPU targets.', '']
    if meta.get('note'):
        lines += [meta['note'], '']
    if meta.get('skipped'):
        lines += ['Skipped: ' + '; '.join(f"{s['model']} ({s['reason']})" for s in meta['skipped']) + '.', '']
    lines += ['| model | params (M) | res | infer batch | infer img/s | infer MB | train batch | train img/s | '
              f'train MB | {bb} batch | {bb} img/s | {bb} MB |', '|---|---:|---:|' + '---:|' * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_m']:.1f} | {r['img_size']} | "
                     + ' | '.join(c for m in MODES for c in _fmt(r, m)) + ' |')
    twins = [r for r in rows if 'twin_diff_fp32' in r]
    if twins:
        lines += ['', 'Same-weights check (fp32 eval output vs the timm twin, one random image): '
                  + '; '.join(f"{r['model']} vs {r['twin']}: max abs {r['twin_diff_fp32']['max_abs']:.2e}, "
                              f"rel L2 {r['twin_diff_fp32']['rel_l2']:.2e}" for r in twins) + '.']
    rat = ratios(rows)
    if rat:
        fmt = lambda v: f'{v:.2f}' if v is not None else '-'  # noqa: E731
        lines += ['', '## Ratios against peers in this run', '',
                  'Zoo model / peer: img/s (> 1: ours faster) and peak memory (< 1: ours smaller).', '',
                  f'| model | peer | infer img/s | train img/s | {bb} img/s | infer mem | train mem | {bb} mem |',
                  '|---|---|---:|---:|---:|---:|---:|---:|']
        for e in rat:
            peer = e['peer'] + (' (same weights)' if e['same_weights'] else '')
            lines.append(f"| {e['model']} | {peer} | " + ' | '.join(
                fmt(e[f'{m}_{k}']) for k in ('img_s', 'peak_mb') for m in MODES) + ' |')
    lines += ['', '## Targets (issue #4; GPU, bf16, channels-last)', '']
    if not on_gpu or s['amp_dtype'] != 'bfloat16':
        lines += ['This run does not meet the targets\' conditions: its ratios are indicative only.', '']
    lines += targets(rows)
    return '\n'.join(lines) + '\n'


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Bar charts of img/s, one panel per measured mode; False (nothing written) when nothing was measured."""
    modes = [m for m in MODES if any(_get(r, m, 'img_s') for r in rows)]
    if not modes:
        return False
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 0.35 * len(rows) + 1.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        names = [r['model'] for r in rows]
        values = [_get(r, mode, 'img_s') or 0 for r in rows]
        ax.barh(names, values, color=['tab:blue' if r['zoo'] else 'tab:gray' for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f'{mode} img/s')
        ax.grid(True, axis='x', alpha=.3)
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    fig.suptitle(f'{title} (blue: zoo, gray: timm peers)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- entry point -------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default=None, help='comma-separated names or wildcards (default: every zoo '
                        'model within --max-params); timm peers and twins are added')
    parser.add_argument('--no-peers', action='store_true', help='do not add the fixed timm peers (twins still are)')
    parser.add_argument('--max-params', type=float, default=None, help='M parameters, for wildcard/default '
                        'selections (default: 35 on CPU, no limit on GPU)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch-size', type=int, default=None, help='224 inference and training batch (default: '
                        '256 on GPU, halved on OOM; 2 on CPU)')
    parser.add_argument('--train-batch-size', type=int, default=None, help='224 training batch (default: '
                        '--batch-size)')
    parser.add_argument('--batch-size-1024', type=int, default=None, help='backbone-run batch (default: 16 on GPU, '
                        '1 on CPU)')
    parser.add_argument('--backbone-size', type=int, default=1024, help='input size of the backbone-only run')
    parser.add_argument('--img-size', type=int, default=None, help="default: each model's native resolution")
    parser.add_argument('--amp-dtype', default=None, choices=tuple(AMP_DTYPES), help='autocast dtype; float32 = no '
                        'autocast (default: bfloat16 on GPU, float32 on CPU)')
    parser.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None,
                        help='default: on for GPU, off for CPU')
    parser.add_argument('--compile', action='store_true', help='torch.compile the model (forward_features at 1024)')
    parser.add_argument('--iters', type=int, default=None, help='timed iterations (per round; default: 50 on GPU, on '
                        'CPU 1, or 3 with --rounds 1)')
    parser.add_argument('--warmup', type=int, default=None, help='untimed iterations first (default: 10 GPU, 1 CPU)')
    parser.add_argument('--rounds', type=int, default=None, help='keep every model built and take --iters timed '
                        'iterations of each mode in this many rounds over all models in turn, the median over the '
                        'rounds (so load changes hit every model alike; default: 5 on CPU, 1 on GPU; 1: one model '
                        'after another, each built only while measured)')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--skip-1024', action='store_true', help='skip the backbone-only run')
    parser.add_argument('--full', action='store_true', help='on CPU, also run the backbone-only measurements')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: keep the default)')
    parser.add_argument('--short', action='store_true', help=f'the targets only: --models {SHORT_MODELS} '
                        '--no-peers --skip-1024, and on GPU 20 timed + 5 warm-up iterations (unless given)')
    parser.add_argument('--time-budget', type=float, default=0, help='seconds; models not started by then are '
                        'skipped and listed (0: no limit)')
    parser.add_argument('--no-plot', action='store_true', help='do not write models.png')
    parser.add_argument('--note', default='', help='a sentence added to the markdown (e.g. machine conditions)')
    parser.add_argument('--out-dir', default=None, help='default: benchmarks/results/<device name>')
    return parser


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value, least = getattr(args, name), 0 if name in ('warmup', 'threads') else 1
        if value is not None and value < least:
            raise CliError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")


def main(argv: Sequence[str] | None = None, clock: Callable[[], float] = time.monotonic) -> list[dict[str, Any]]:
    """Run the benchmark (``argv``: the command line); ``clock`` (seconds) is what ``--time-budget`` is read from."""
    args = build_parser().parse_args(argv)
    _check_positive(args, 'batch_size', 'batch_size_1024', 'backbone_size', 'img_size', 'iters', 'warmup', 'threads',
                    'rounds')
    try:
        args.device = torch.device(args.device)
    except RuntimeError as e:
        raise CliError(f'--device {args.device}: {first_line(e)}')
    on_gpu = args.device.type == 'cuda'
    if on_gpu and not torch.cuda.is_available():
        raise CliError(f'--device {args.device}: CUDA is not available')
    if args.threads:
        torch.set_num_threads(args.threads)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    if args.short:
        args.models = args.models or SHORT_MODELS
        args.no_peers = args.skip_1024 = True
        if on_gpu:
            args.iters, args.warmup = args.iters or 20, 5 if args.warmup is None else args.warmup
    args.amp_dtype = args.amp_dtype or ('bfloat16' if on_gpu else 'float32')
    args.channels_last = on_gpu if args.channels_last is None else args.channels_last
    args.batch_size = args.batch_size or (256 if on_gpu else 2)
    args.batch_size_1024 = args.batch_size_1024 or (16 if on_gpu else 1)
    args.rounds = args.rounds or (1 if on_gpu else 5)
    args.iters = args.iters or (50 if on_gpu else 1 if args.rounds > 1 else 3)
    args.warmup = (10 if on_gpu else 1) if args.warmup is None else args.warmup
    args.skip_1024 = args.skip_1024 or (not on_gpu and not args.full)
    max_params = args.max_params if args.max_params is not None else (math.inf if on_gpu else 35.)
    names = resolve_models(args.models, max_params, peers=not args.no_peers)
    out = Path(args.out_dir or RESULTS / device_name(args.device))
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / '.write_test'
        probe.write_text('')
        probe.unlink()
    except OSError as e:
        raise CliError(f'--out-dir {out}: not writable ({first_line(e)})')
    args.cpu_memory = not on_gpu and cpu_memory_tracking()

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = 'n/a'
    settings = {k: getattr(args, k) for k in ('batch_size', 'train_batch_size', 'batch_size_1024', 'backbone_size',
                                              'img_size', 'amp_dtype', 'channels_last', 'compile', 'iters', 'warmup',
                                              'rounds', 'skip_train', 'skip_1024')}
    meta = {'device': torch.cuda.get_device_name(args.device) if on_gpu else cpu_name(),
            'device_type': args.device.type, 'torch': torch.__version__, 'timm': timm.__version__,
            'triton': triton_version, 'python': platform.python_version(), 'threads': torch.get_num_threads(),
            'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            'loadavg_before': [round(v, 1) for v in os.getloadavg()], 'settings': settings, 'note': args.note,
            'cpu_memory': 'resident-set growth' if args.cpu_memory else ('n/a' if not on_gpu else 'cuda allocator'),
            'time_budget_s': args.time_budget, 'skipped': [],
            'allocator': 'release' if releasing_freed_memory() else 'ordinary'}
    print(f"{meta['device']}: {len(names)} models: {', '.join(names)}", flush=True)
    deadline = clock() + args.time_budget if args.time_budget else math.inf

    def save(complete: bool) -> None:
        meta['complete'] = complete
        (out / 'models.json').write_text(json.dumps({'meta': meta, 'rows': rows, 'ratios': ratios(rows)}, indent=1))

    rows = []
    if args.rounds == 1:
        for name in names:
            if clock() > deadline:
                meta['skipped'].append({'model': name, 'reason': TIME_BUDGET})
                print(f'skip {name}: {TIME_BUDGET}', flush=True)
                continue
            t0 = time.perf_counter()
            row = bench_model(name, args)
            rows.append(row)
            print(f"{name:32s} " + ' | '.join(f"{m} " + ' '.join(_fmt(row, m)) for m in MODES)
                  + f'  ({time.perf_counter() - t0:.0f} s)', flush=True)
            save(complete=False)
    else:
        if clock() > deadline:  # as the one-round path: no model is built or timed once the budget is spent
            for name in names:
                meta['skipped'].append({'model': name, 'reason': TIME_BUDGET})
                print(f'skip {name}: {TIME_BUDGET}', flush=True)
            names = []
        entries = [build_row(name, args) for name in names]
        rows = [row for row, _ in entries]
        for mode in ('infer', 'train')[:1 if args.skip_train else 2]:
            t0 = time.perf_counter()
            measure_rounds(entries, mode, args, lambda: clock() > deadline)
            done = min((len(r[mode].get('rounds_ms', ())) for r in rows if 'rounds_ms' in r[mode]), default=0)
            if done < args.rounds and rows:  # (no rows: every model is listed as skipped already)
                meta['skipped'].append({'model': f'{mode} rounds {done + 1}-{args.rounds}', 'reason': TIME_BUDGET})
            print(f'{mode}: {done} rounds ({time.perf_counter() - t0:.0f} s): ' + ', '.join(
                f"{r['model']} {' '.join(_fmt(r, mode))}" for r in rows), flush=True)
            save(complete=False)
        if not args.skip_1024:
            for row, model in entries:
                row['backbone'] = run_mode(backbone_model(row, model, args), 'backbone', args.batch_size_1024,
                                           args.backbone_size, args)
        del entries
    meta['loadavg_after'] = [round(v, 1) for v in os.getloadavg()]
    save(complete=not meta['skipped'])
    md = markdown(rows, meta)
    (out / 'models.md').write_text(md)
    png = not args.no_plot and plot(rows, out / 'models.png', f"models on {meta['device']}")
    print(md)
    print(f"wrote {out}/models.json, models.md{', models.png' if png else ''}")
    return rows


if __name__ == '__main__':
    keep_freed_memory()  # timed with the ordinary allocator; each peak with freed memory released (measure)
    sys.exit(run_cli(main))
