"""What the benchmark scripts share (a library, not a script): timing and peak memory of a call, the model
training / inference step, the machine's name and results folder, and a family benchmark's run settings.

Two ways of timing, each fitting its scripts:

* :func:`measure` (models.py and the family benchmarks): the median over ``iters`` calls after ``warmup``; on CUDA
  per-iteration CUDA events and ``max_memory_allocated``; on CPU the median process CPU time with one torch thread
  (other processes on the cores do not inflate it), else wall-clock time, and the resident-set growth of one call;
* :func:`measure_op` (ops.py, routed.py): on CUDA triton's ``do_bench`` median and its spread; on CPU the minimum of
  ``reps`` calls of the thread's CPU time (one torch thread) or wall-clock time.

CPU peak memory is the growth of the resident set during one call (VmHWM reset through /proc/self/clear_refs); it
needs freed tensors to go back to the OS: :func:`release_freed_memory` (or ``MALLOC_MMAP_THRESHOLD_=65536`` in the
environment, which ops.py and routed.py re-execute themselves with).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo_common import first_line

__all__ = ['TIME_BUDGET', 'AMP_DTYPES', 'RESULTS', 'cpu_name', 'device_name', 'release_freed_memory',
           'cpu_memory_tracking', 'cpu_peak_bytes', 'measure', 'measure_op', 'step_fn', 'free_memory', 'run_mode',
           'model_row', 'logit_difference', 'pair_ratios', 'timing_phrase', 'intro', 'model_table', 'add_run_args',
           'prepare_run', 'run_meta', 'loadavg', 'write_results']

RESULTS = Path(__file__).resolve().parent / 'results'
TIME_BUDGET = 'time budget spent'  # the reason recorded for what a run skipped once its --time-budget was spent
AMP_DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16, 'float32': None}


# --- the machine -------------------------------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        model = next(ln.split(':', 1)[1].strip() for ln in Path('/proc/cpuinfo').read_text().splitlines()
                     if ln.startswith('model name'))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f'CPU {model} ({os.cpu_count()} cores)'


def device_name(device: torch.device) -> str:
    """The results folder name: the GPU's name, or the CPU architecture + torch threads."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device).replace(' ', '_')
    return f'cpu-{platform.machine()}-{torch.get_num_threads()}threads'


def loadavg() -> str:
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())


# --- memory ------------------------------------------------------------------------------------------------------

def _proc_status_kb(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


_releasing = False  # whether release_freed_memory() is in force (mallopt has no getter)


def release_freed_memory() -> None:
    """Make freed tensors go back to the OS (glibc: every allocation >= 64 KiB is its own mapping), so that the
    resident-set peak of one call measures that call rather than memory the allocator kept from earlier calls.
    Done by command-line entry points only: it changes the whole process's allocator."""
    global _releasing
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD: glibc's default
        _releasing = True
    except OSError:
        pass


def keep_freed_memory() -> None:
    """Undo :func:`release_freed_memory`: allocations below 32 MiB come from the heap again and freed memory is
    reused, as in an ordinary process (a 64 KiB threshold makes every tensor its own mapping: page faults on each
    first touch, which doubled the time of allocation-heavy ops such as the tiled NA path). Setting the mmap
    threshold switches glibc's dynamic thresholds off, so the trim threshold is set as they would set it (twice
    the mmap threshold): with the default 128 KiB the heap top was given back after every call and paged in again
    (~3 of 23 ms of the NA forward at DiNAT-T's 56x56 stage)."""
    global _releasing
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
        _releasing = False
    except OSError:
        pass


def releasing_freed_memory() -> bool:
    """Whether :func:`release_freed_memory` is in force (timings then include a page fault per fresh tensor)."""
    return _releasing


@contextlib.contextmanager
def freed_memory_released() -> Iterator[None]:
    """:func:`release_freed_memory` inside the block, the allocator as it was after it: a resident-set peak taken
    in a process that times with the ordinary allocator (models.py). The heap's free memory is returned first
    (``malloc_trim``): glibc serves even large allocations from free heap chunks, which would hide them."""
    if _releasing:
        yield
        return
    release_freed_memory()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:
        pass
    try:
        yield
    finally:
        keep_freed_memory()


def cpu_memory_tracking() -> bool:
    """Whether the resident-set peak can be reset (Linux /proc/self/clear_refs)."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
        return True
    except OSError:
        return False


def cpu_peak_bytes(fn: Callable[[], Any], collect: bool = False) -> int:
    """Resident-set growth during ``fn()`` (VmHWM reset to the current RSS first); ``collect`` runs the garbage
    collector before (about 0.5 s with timm's registry loaded)."""
    if collect:
        gc.collect()
    before = _proc_status_kb('VmRSS')
    Path('/proc/self/clear_refs').write_text('5')
    fn()
    return max(0, _proc_status_kb('VmHWM') - before) * 1024


def free_memory(device: torch.device, collect: bool = False) -> None:
    """Give cached device memory back; ``collect`` also runs the garbage collector (slow: about 0.5 s with timm's
    registry loaded), needed only after an exception whose traceback held tensors."""
    if collect:
        gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


# --- timing ------------------------------------------------------------------------------------------------------

def measure(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int, cpu_memory: bool
            ) -> dict[str, float]:
    """Median time per call (ms) and peak memory (MB; -1 when not measured) of ``fn`` after ``warmup`` calls (at
    least one)."""
    for _ in range(max(1, warmup)):
        fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        with freed_memory_released():
            peak = cpu_peak_bytes(fn) if cpu_memory else -1
    return {**time_calls(fn, device, iters), 'peak_mb': peak / 2 ** 20}


def time_calls(fn: Callable[[], Any], device: torch.device, iters: int) -> dict[str, float]:
    """Median ms per call of ``fn`` (already warm) over ``iters`` calls: per-call CUDA events on a GPU; on CPU the
    process's CPU time with one torch thread (which other processes on the cores do not inflate), else wall-clock
    time (``ms``; both also as ``wall_ms`` / ``cpu_ms``)."""
    if device.type == 'cuda':
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return {'ms': statistics.median(s.elapsed_time(e) for s, e in events)}
    wall, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    wall_ms, cpu_ms = statistics.median(wall), statistics.median(cpu)
    return {'ms': cpu_ms if torch.get_num_threads() == 1 else wall_ms, 'wall_ms': wall_ms, 'cpu_ms': cpu_ms}


def measure_op(fn: Callable[[], Any], device: torch.device, reps: int, short: bool = False, cpu_peak: bool = True
               ) -> tuple[float, float, float]:
    """(ms, peak bytes, spread) of ``fn``. GPU: do_bench's median, over at least ~7 calls (``short``: a 50 ms
    window, else ``max(100, 20 * reps)`` ms), spread = (p80 - p20) / median. CPU: the minimum of ``reps`` runs
    (ordinary allocator), spread = (max - min) / min; peak (freed memory returned to the OS) NaN unless
    ``cpu_peak`` (its garbage collection costs ~0.5 s a call)."""
    fn()
    if device.type == 'cuda':
        import triton.testing
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        rep = max(50 if short else max(100, reps * 20), 7 * start.elapsed_time(end))
        p20, p50, p80 = triton.testing.do_bench(fn, warmup=10 if short else 25, rep=rep, quantiles=[0.2, 0.5, 0.8])
        return p50, peak, (p80 - p20) / p50
    # one torch thread: the thread's CPU time (immune to other processes on the cores); else wall-clock time.
    # Timed with the ordinary allocator; the peak with freed memory going back to the OS (see keep_freed_memory)
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    keep_freed_memory()
    fn()
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
    peak = math.nan
    if cpu_peak:
        release_freed_memory()
        peak = cpu_peak_bytes(fn, collect=True)
    return min(times), peak, (max(times) - min(times)) / max(min(times), 1e-9)


def timing_phrase(meta: dict[str, Any]) -> str:
    """How a family benchmark's times were taken (its ``meta``: ``device_type``, ``threads``), for the markdown."""
    if meta['device_type'] == 'cuda':
        return 'median of per-iteration CUDA-event times'
    if meta['threads'] == 1:
        return 'median process CPU time per iteration (one torch thread: other processes do not inflate it)'
    return 'median wall-clock time per iteration'


# --- whole-model steps -------------------------------------------------------------------------------------------

def step_fn(model: nn.Module, mode: str, batch: int, img_size: int, args: argparse.Namespace) -> Callable[[], Any]:
    """The call to time for ``mode`` (``infer``, ``train`` or ``backbone``: ``forward_features``) on random
    inputs (never zeros), under ``args``' ``device``, ``amp_dtype``, ``channels_last`` and ``compile``."""
    device, dtype = args.device, AMP_DTYPES[args.amp_dtype]
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, img_size, img_size, device=device).contiguous(memory_format=fmt)
    amp = lambda: torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)  # noqa: E731
    if mode != 'train':
        model.eval()
        fwd = model.forward_features if mode == 'backbone' else model
        fwd = torch.compile(fwd) if args.compile else fwd

        def infer():
            with torch.inference_mode(), amp():
                return fwd(x)
        return infer

    model.train()
    fwd = torch.compile(model) if args.compile else model
    target = torch.randint(0, model.num_classes, (batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None

    def train():  # gradients are freed at the end, so the memory baseline between steps holds none
        with amp():
            loss = F.cross_entropy(fwd(x), target)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return train


def run_mode(model: nn.Module, mode: str, batch: int, img_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one mode; on a CUDA out-of-memory the batch is halved until it fits. Errors are recorded, not raised,
    so one model that cannot run (e.g. an input size it rejects) does not stop the run."""
    while True:
        try:
            res = measure(step_fn(model, mode, batch, img_size, args), args.device, args.iters, args.warmup,
                          args.cpu_memory)
            return {'batch': batch, 'img_size': img_size, 'img_s': batch / res['ms'] * 1e3, **res}
        except torch.OutOfMemoryError:
            pass
        except Exception as e:  # noqa: BLE001  (reported in the results)
            return {'batch': batch, 'img_size': img_size, 'error': f'{type(e).__name__}: {first_line(e)[:200]}'}
        finally:
            free_memory(args.device)
        # out of memory: the failed attempt's inputs, activations and optimizer state are unreferenced by now
        model.zero_grad(set_to_none=True)
        free_memory(args.device, collect=True)
        if batch == 1:
            return {'batch': 0, 'img_size': img_size, 'error': 'out of memory at batch 1'}
        batch //= 2


def model_row(model: nn.Module, args: argparse.Namespace, batch: int, img_size: int, /, *,
              rounding: Callable[[float], float] = lambda v: round(v, 2), channels_last: bool = True,
              **fields: Any) -> dict[str, Any]:
    """A family benchmark's row of one model: ``fields``, the parameter count, then its ``infer`` and ``train``
    results (:func:`run_mode`, floats through ``rounding``). The model goes to the run's device (and to
    channels-last when the run is, unless ``channels_last=False``); printed as measured."""
    model = model.to(args.device)
    if args.channels_last and channels_last:
        model = model.to(memory_format=torch.channels_last)
    row = dict(fields, params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
    for mode in ('infer', 'train'):
        res = run_mode(model, mode, batch, img_size, args)
        row[mode] = {k: rounding(v) if isinstance(v, float) else v for k, v in res.items()}
    print(row, flush=True)
    return row


@torch.no_grad()
def logit_difference(official: nn.Module, ours: nn.Module, img_size: int, label: str, batch: int = 2) -> float:
    """Max abs fp32 logit difference of two models holding the same weights on seeded random images (printed:
    the same-weights check of a family benchmark)."""
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    diff = (official(x) - ours(x)).abs().max().item()
    print(f'{label}, fp32: max |official - ours| logits = {diff:.2e}', flush=True)
    return diff


def pair_ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float]:
    """``ours / peer`` of two :func:`run_mode` rows (``{'infer': ..., 'train': ...}``): img/s (> 1: ours faster)
    and peak MB (< 1: ours smaller), rounded to 3 places, where both were measured. The family benchmarks'
    ours-vs-official ratios."""
    out = {}
    for mode in ('infer', 'train'):
        a, b = ours[mode], peer[mode]
        for key in ('img_s', 'peak_mb'):
            if a.get(key, -1) > 0 and b.get(key, -1) > 0:
                out[f'{mode}_{key}'] = round(a[key] / b[key], 3)
    return out


def intro(title: str, meta: dict[str, Any], settings: str, cpu_memory: str, cpu_note: str = '') -> list[str]:
    """The markdown head of a family benchmark: ``# <title> on <device>``, versions, iterations and how they were
    timed, memory (``cpu_memory`` says what the CPU figure is), ``settings`` (a sentence), on CPU the load average
    (and ``cpu_note``), and what was skipped."""
    on_gpu = meta['device_type'] == 'cuda'
    memory = 'peak `torch.cuda.max_memory_allocated`' if on_gpu else cpu_memory
    lines = [f"# {title} on {meta['device']}", '',
             f"torch {meta['torch']}, timm {meta['timm']}; {meta['date']}; {meta['threads']} torch thread(s). "
             f"{meta['warmup']} warm-up + {meta['iters']} timed iterations, {timing_phrase(meta)}; memory: {memory}. "
             + settings]
    if not on_gpu:
        lines += ['', f"CPU: load average {meta['loadavg_before']} before and {meta['loadavg_after']} after the run, "
                  'on a shared machine. Absolute numbers say little; ratios within the run say more.'
                  + (' ' + cpu_note if cpu_note else '')]
    if meta.get('skipped'):
        lines += ['', 'Skipped: ' + '; '.join(meta['skipped']) + '.']
    return lines


def model_table(heading: str, rows: list[dict[str, Any]], columns: dict[str, str], img_s_format: str = '.1f'
                ) -> list[str]:
    """Markdown lines: section ``heading``, a table of :func:`model_row` rows (the leading ``columns``, header ->
    row key, numbers right-aligned; then batch, img/s and MB of ``infer`` and ``train``), then the errors of the
    modes that failed (named by the leading columns but the parameter count)."""
    spec = {'img_s': img_s_format, 'peak_mb': '.1f'}

    def cells(res: dict[str, Any]) -> str:
        values = ['error' if k not in res else format(res[k], spec[k]) if res[k] >= 0 else 'n/a' for k in spec]
        return ' | '.join([str(res['batch']), *values])
    numeric = [bool(rows) and isinstance(rows[0][k], (int, float)) for k in columns.values()]  # right-aligned
    lines = ['', f'## {heading}', '', '| ' + ' | '.join(columns) + ' | infer batch | infer img/s | infer MB | '
             'train batch | train img/s | train MB |', '|' + ''.join('---:|' if n else '---|' for n in numeric)
             + '---:|' * 6]
    for r in rows:
        lead = [str(r[k]) for k in columns.values()]
        lines.append('| ' + ' | '.join(lead + [cells(r[m]) for m in ('infer', 'train')]) + ' |')
    label = lambda r: ' '.join(str(r[k]) for k in columns.values() if k != 'params_m')  # noqa: E731
    errors = [f"{label(r)} {m}: {r[m]['error']}" for r in rows for m in ('infer', 'train') if 'error' in r[m]]
    if errors:
        lines += ['', 'Errors: ' + '; '.join(errors) + '.']
    return lines


# --- a family benchmark's run ------------------------------------------------------------------------------------

def add_run_args(parser: argparse.ArgumentParser, iters: int = 3, amp_help: str | None = 'of the model rows'
                 ) -> None:
    """The family benchmarks' common options: ``--iters``, ``--warmup``, ``--device``, and ``--amp-dtype``
    (``amp_help`` says what it applies to; ``None``: no such option)."""
    parser.add_argument('--iters', type=int, default=iters, help='timed iterations (the median is kept)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    if amp_help is not None:
        parser.add_argument('--amp-dtype', choices=tuple(AMP_DTYPES),
                            help=' '.join(filter(None, ('autocast dtype', amp_help,
                                                        '(default: bfloat16 on CUDA, float32 on CPU)'))))


def prepare_run(args: argparse.Namespace, model_batch_gpu: int = 128, channels_last: bool = True) -> bool:
    """A family benchmark's settings from its parsed ``args`` (``device``, ``model_batch``, ``amp_dtype`` if it
    has the option): ``args.device`` a torch.device; model batch ``model_batch_gpu`` on CUDA, 4 on CPU; bf16
    autocast and channels-last (``channels_last``) on CUDA, fp32 on CPU; CPU peak memory where it can be measured
    (and the allocator setting it needs). Returns whether the run is on CUDA."""
    args.device = torch.device(args.device)
    on_gpu = args.device.type == 'cuda'
    args.model_batch = args.model_batch or (model_batch_gpu if on_gpu else 4)
    args.amp_dtype = getattr(args, 'amp_dtype', None) or ('bfloat16' if on_gpu else 'float32')
    args.channels_last, args.compile = on_gpu and channels_last, False
    args.cpu_memory = not on_gpu and cpu_memory_tracking()
    if args.cpu_memory:
        release_freed_memory()
    return on_gpu


def run_meta(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """A family benchmark's ``meta``: device, versions, date, iterations, AMP dtype, ``extra``, load average."""
    import timm
    on_gpu = args.device.type == 'cuda'
    return dict(device=torch.cuda.get_device_name(args.device) if on_gpu else cpu_name(),
                device_type=args.device.type, threads=torch.get_num_threads(), torch=torch.__version__,
                timm=timm.__version__, date=datetime.date.today().isoformat(), iters=args.iters, warmup=args.warmup,
                amp_dtype=args.amp_dtype, **extra, loadavg_before=loadavg())


def write_results(name: str, result: dict[str, Any], md: str, device: torch.device,
                  out_dir: Path | None = None) -> Path:
    """Print the markdown, write ``<name>.json`` and ``<name>.md`` under ``out_dir`` (default
    ``benchmarks/results/<device>/``)."""
    print('\n' + md)
    out = out_dir or RESULTS / device_name(device)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{name}.json').write_text(json.dumps(result, indent=1) + '\n')
    (out / f'{name}.md').write_text(md)
    print(f'wrote {out / (name + ".json")} and {name}.md')
    return out
