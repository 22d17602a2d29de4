"""Benchmark neighborhood attention: our backends against dense SDPA, FlexAttention and the unfused approach.

Forward and forward+backward time and peak memory per problem and implementation:

* ``torch`` / ``triton``: our backends through ``ops.na2d`` (triton on CUDA only);
* ``sdpa_dense``: ``F.scaled_dot_product_attention`` over all tokens, no mask (flash on GPU): the dense cost
  that the FLOP bound (dense pairs / sparse pairs) refers to;
* ``sdpa_masked``: the same with the pattern (and rpb) as a dense ``[N, N]`` mask (O(N^2) memory);
* ``flex``: compiled FlexAttention with the pattern as a block mask and rpb as a score_mod (CUDA only);
* ``unfused``: NATTEN <= 0.17 / NAT's approach: gather the k neighbours of every query, QK^T, softmax, AV.

Problems: DiNAT-T stage shapes at 224 (and the scaling series used for the plot), DiNAT stage 1/2 at
1024x1024 input, and NATTEN's published 2-D problem (256x256 tokens, 24 heads, head_dim 128, window 80x80, with
and without stride 16). Problems too big for the device are skipped with the reason printed.

    python benchmarks/ops.py                # CPU subset on CPU, everything on a GPU
    python benchmarks/ops.py --quick        # fewer repetitions

Writes ``benchmarks/results/<device>/ops.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ops  # noqa: E402
from ops.na.flops import na_pairs  # noqa: E402
from ops.na.pattern import axis_window, dense_mask, dense_rpb_index, make_spec  # noqa: E402


@dataclass(frozen=True)
class Problem:
    name: str
    series: str
    shape: tuple[int, int]
    heads: int
    head_dim: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    rpb: bool = True
    batch: int = 1
    gpu_only: bool = False

    @property
    def tokens(self) -> int:
        return self.shape[0] * self.shape[1]


def problems(on_gpu: bool) -> list[Problem]:
    b = 32 if on_gpu else 1
    out = []
    # DiNAT-T at 224: stages 56/28/14/7 with 2/4/8/16 heads of 32 channels, k=7, dilations (1, 8/4/2/1)
    for size, heads, dil in ((56, 2, 8), (28, 4, 4), (14, 8, 2), (7, 16, 1)):
        for d in sorted({1, dil}):
            out.append(Problem(f'dinat224_{size}x{size}_d{d}', 'dinat224', (size, size), heads, 32, 7, dilation=d,
                               batch=b))
    # DiNAT-T at 1024x1024 input: stage 1 (256x256, dilation up to 36) and stage 2 (128x128)
    out += [Problem('dinat1024_256x256_d1', 'dinat1024', (256, 256), 2, 32, 7, batch=1 if not on_gpu else 4),
            Problem('dinat1024_256x256_d32', 'dinat1024', (256, 256), 2, 32, 7, dilation=32,
                    batch=1 if not on_gpu else 4),
            Problem('dinat1024_128x128_d1', 'dinat1024', (128, 128), 4, 32, 7, batch=1 if not on_gpu else 4)]
    # scaling series for the plot: 2-D, k=7, 2 heads of 32
    for size in (16, 32, 64, 96, 128) + ((192, 256) if on_gpu else ()):
        out.append(Problem(f'scale_{size}x{size}', 'scaling', (size, size), 2, 32, 7, batch=1))
    # NATTEN's published problem (FNA/GNA papers): 256x256 tokens, 24 heads, head_dim 128, window 80x80
    out += [Problem('natten_256x256_w80', 'natten', (256, 256), 24, 128, 80, rpb=False, gpu_only=True),
            Problem('natten_256x256_w80_s16', 'natten', (256, 256), 24, 128, 80, stride=16, rpb=False,
                    gpu_only=True)]
    return out


def _inputs(p: Problem, device, dtype, grad: bool):
    gen = torch.Generator(device='cpu').manual_seed(0)
    shape = (p.batch, *p.shape, p.heads, p.head_dim)
    q, k, v = (torch.randn(shape, generator=gen).to(device, dtype).requires_grad_(grad) for _ in range(3))
    rpb = None
    if p.rpb:
        rpb = (torch.randn(p.heads, 2 * p.kernel - 1, 2 * p.kernel - 1, generator=gen) * .1).to(device, dtype)
        rpb.requires_grad_(grad)
    return q, k, v, rpb


# --- peers -------------------------------------------------------------------------------------------------------

def _ours(backend):
    def run(p, q, k, v, rpb):
        return ops.na2d(q, k, v, p.kernel, p.stride, p.dilation, rpb=rpb, backend=backend)
    return run


def _bhnd(x):
    return x.flatten(1, 2).transpose(1, 2)


def _sdpa_dense(p, q, k, v, rpb):
    return F.scaled_dot_product_attention(_bhnd(q), _bhnd(k), _bhnd(v)).transpose(1, 2).reshape(q.shape)


class _Masked:
    """Masked SDPA with the dense pattern (+ rpb) as an additive bias; the bias is built once per problem."""

    def __init__(self):
        self.key = None

    def __call__(self, p, q, k, v, rpb):
        if self.key != (p, q.device, q.dtype):
            spec = make_spec(p.shape, p.kernel, p.stride, p.dilation)
            mask = dense_mask(spec, p.shape, q.device)
            self.bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float('-inf'))
            self.index = dense_rpb_index(spec, p.shape, q.device) if rpb is not None else None
            self.key = (p, q.device, q.dtype)
        bias = self.bias if rpb is None else self.bias + rpb[(slice(None), *self.index)]
        out = F.scaled_dot_product_attention(_bhnd(q), _bhnd(k), _bhnd(v), attn_mask=bias)
        return out.transpose(1, 2).reshape(q.shape)


def _neighbor_index(p: Problem, device):
    spec = make_spec(p.shape, p.kernel, p.stride, p.dilation)
    idx, rel = [], []
    for n in p.shape:
        first, _ = axis_window(n, p.kernel, p.stride, p.dilation, False, device)
        j = torch.arange(p.kernel, device=device)
        key = first[:, None] + j * p.dilation
        idx.append(key)
        rel.append((key - torch.arange(n, device=device)[:, None]) // p.dilation + p.kernel - 1)
    flat = (idx[0][:, None, :, None] * p.shape[1] + idx[1][None, :, None, :]).reshape(-1, p.kernel ** 2)
    relf = (rel[0][:, None, :, None] * (2 * p.kernel - 1) + rel[1][None, :, None, :]).reshape(-1, p.kernel ** 2)
    return spec, flat, relf


class _Unfused:
    """NATTEN 0.17 CPU / NAT: per query, gather its k*k neighbours; QK^T; + rpb; softmax; AV (N x k^2 memory)."""

    def __init__(self):
        self.key = None

    def __call__(self, p, q, k, v, rpb):
        if self.key != (p, q.device):
            _, self.flat, self.rel = _neighbor_index(p, q.device)
            self.key = (p, q.device)
        b, h, w, heads, d = q.shape
        qf, kf, vf = (x.reshape(b, h * w, heads, d).transpose(1, 2) for x in (q, k, v))  # [B, heads, N, d]
        kn = kf[:, :, self.flat]  # [B, heads, N, k*k, d]
        attn = (qf[:, :, :, None, :] * d ** -0.5 @ kn.transpose(-1, -2))[..., 0, :]  # [B, heads, N, k*k]
        if rpb is not None:
            attn = attn + rpb.reshape(heads, -1)[:, self.rel]
        attn = attn.softmax(-1)
        out = (attn[..., None, :] @ vf[:, :, self.flat])[..., 0, :]
        return out.transpose(1, 2).reshape(q.shape)


def _flex():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    compiled = torch.compile(flex_attention)
    cache = {}

    def run(p, q, k, v, rpb):
        key = (p, q.device)
        if key not in cache:
            starts = [axis_window(n, p.kernel, p.stride, p.dilation, False, q.device)[0] for n in p.shape]
            w, kk, dl = p.shape[1], p.kernel, p.dilation
            _, _, rel = _neighbor_index(p, q.device)

            def mask_mod(b, h, qi, ki):
                qy, qx, ky, kx = qi // w, qi % w, ki // w, ki % w
                dy, dx = ky - starts[0][qy], kx - starts[1][qx]
                return ((dy >= 0) & (dy < kk * dl) & (dy % dl == 0) & (dx >= 0) & (dx < kk * dl)
                        & (dx % dl == 0))

            n = p.tokens
            cache[key] = create_block_mask(mask_mod, None, None, n, n, device=q.device)
        block_mask = cache[key]
        w, kk, dl = p.shape[1], p.kernel, p.dilation
        score_mod = None
        if rpb is not None:
            table = rpb.reshape(rpb.shape[0], -1)

            def score_mod(score, b, h, qi, ki):
                ry = (ki // w - qi // w) // dl + kk - 1
                rx = (ki % w - qi % w) // dl + kk - 1
                return score + table[h, ry * (2 * kk - 1) + rx]
        out = compiled(_bhnd(q), _bhnd(k), _bhnd(v), score_mod=score_mod, block_mask=block_mask)
        return out.transpose(1, 2).reshape(q.shape)
    return run


# --- measurement -------------------------------------------------------------------------------------------------

def _proc_status_kb(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _cpu_peak_bytes(fn) -> int:
    """Peak resident memory of ``fn()`` above the start (Linux: VmHWM reset through /proc/self/clear_refs).

    Needs allocations to go back to the OS when freed: :func:`main` re-executes with a fixed glibc mmap
    threshold so that every tensor of 64 KiB or more is its own mapping.
    """
    gc.collect()
    before = _proc_status_kb('VmRSS')
    Path('/proc/self/clear_refs').write_text('5')
    fn()
    return max(0, _proc_status_kb('VmHWM') - before) * 1024


def measure(fn, device, reps: int) -> tuple[float, int]:
    """(ms, peak bytes) of ``fn``: do_bench's median on GPU; on CPU the minimum of ``reps`` runs."""
    fn()
    if device.type == 'cuda':
        import triton.testing
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        ms = triton.testing.do_bench(fn, warmup=25, rep=max(100, reps * 20))
        return ms, peak
    # one torch thread: the thread's CPU time (immune to other processes on the cores); else wall-clock time
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
    return min(times), _cpu_peak_bytes(fn)


def _fits(p: Problem, peer: str, on_gpu: bool, dtype) -> str | None:
    """Reason to skip ``peer`` on ``p`` (memory or device), or None."""
    n = p.tokens
    elem = torch.finfo(dtype).bits // 8
    if p.gpu_only and not on_gpu:
        return 'GPU-sized problem'
    if peer == 'sdpa_masked' and p.batch * p.heads * n * n * elem * 3 > (8 << 30 if on_gpu else 1 << 30):
        return f'dense [N, N] mask/logits of {n} tokens too large'
    if peer == 'sdpa_dense' and not on_gpu and p.batch * p.heads * n * n * 4 * 2 > 1 << 30:
        return f'dense CPU attention over {n} tokens too large'
    if peer == 'unfused' and p.batch * p.heads * n * p.kernel ** 2 * p.head_dim * elem * 4 > (16 << 30 if on_gpu
                                                                                                else 2 << 30):
        return 'gathered neighbours too large'
    if peer == 'unfused' and p.stride > 1:
        return 'NATTEN 0.17 has no stride'
    return None


def _make_call(fn, p: Problem, q, k, v, rpb, mode: str):
    if mode == 'fwd':
        def call():
            with torch.no_grad():
                return fn(p, q, k, v, rpb)
        return call
    leaves = [t for t in (q, k, v, rpb) if t is not None]
    grad = torch.randn_like(q)

    def call():
        return torch.autograd.grad(fn(p, q, k, v, rpb), leaves, grad, allow_unused=True)
    return call


def run_all(args) -> list[dict]:
    device = torch.device(args.device)
    on_gpu = device.type == 'cuda'
    dtype = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[args.dtype]
    peers = {'torch': _ours('torch'), 'sdpa_dense': _sdpa_dense, 'sdpa_masked': _Masked(), 'unfused': _Unfused()}
    if on_gpu:
        peers = {'triton': _ours('triton'), 'flex': _flex(), **peers}
        if not args.gpu_torch:
            peers.pop('torch')
    rows = []
    for p in problems(on_gpu):
        if args.filter and args.filter not in p.name:
            continue
        spec = make_spec(p.shape, p.kernel, p.stride, p.dilation)
        flop_bound = p.tokens ** 2 / na_pairs(p.shape, spec)
        for peer, fn in peers.items():
            reason = _fits(p, peer, on_gpu, dtype)
            if reason:
                print(f'skip {p.name:28s} {peer:12s} {reason}')
                continue
            row = dict(problem=p.name, series=p.series, tokens=p.tokens, peer=peer, flop_bound=flop_bound,
                       **{k: v for k, v in asdict(p).items() if k not in ('name', 'series')})
            for mode in ('fwd', 'fwd_bwd'):
                call = _make_call(fn, p, *_inputs(p, device, dtype, grad=mode == 'fwd_bwd'), mode)
                try:
                    ms, peak = measure(call, device, args.reps)
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    print(f'fail {p.name:28s} {peer:12s} {mode}: {str(e).splitlines()[0][:100]}')
                    ms, peak = math.nan, -1
                row[f'{mode}_ms'], row[f'{mode}_peak_mb'] = ms, peak / 2 ** 20
            rows.append(row)
            print(f"{p.name:28s} {peer:12s} fwd {row['fwd_ms']:9.2f} ms {row['fwd_peak_mb']:9.1f} MB | fwd+bwd "
                  f"{row['fwd_bwd_ms']:9.2f} ms {row['fwd_bwd_peak_mb']:9.1f} MB", flush=True)
    return rows


def _markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# ops benchmark on {meta['device']} ({meta['dtype']}, torch {meta['torch']})", '',
             'Time in ms (GPU: median of do_bench; CPU: minimum of the runs, thread CPU time with one torch '
             'thread); memory is the peak in MB above the inputs (GPU: allocator peak; CPU: resident-set peak); '
             '`x dense` is the speed-up over `sdpa_dense` (all tokens, no mask) in the same run; `bound` = dense '
             'pairs / pattern pairs.', '',
             '| problem | peer | fwd ms | fwd+bwd ms | fwd MB | fwd+bwd MB | x dense fwd | x dense fwd+bwd | bound |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    dense = {r['problem']: r for r in rows if r['peer'] == 'sdpa_dense'}
    for r in rows:
        d = dense.get(r['problem'])
        sf = f"{d['fwd_ms'] / r['fwd_ms']:.1f}x" if d else '-'
        sb = f"{d['fwd_bwd_ms'] / r['fwd_bwd_ms']:.1f}x" if d else '-'
        lines.append(f"| {r['problem']} | {r['peer']} | {r['fwd_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | "
                     f"{r['fwd_peak_mb']:.1f} | {r['fwd_bwd_peak_mb']:.1f} | {sf} | {sb} | {r['flop_bound']:.1f} |")
    return '\n'.join(lines) + '\n'


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    series = [r for r in rows if r['series'] == 'scaling']
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, label in zip(axes, ('fwd_ms', 'fwd_bwd_ms', 'fwd_bwd_peak_mb'),
                              ('forward time (ms)', 'forward+backward time (ms)', 'forward+backward peak memory (MB)')):
        for peer in dict.fromkeys(r['peer'] for r in series):
            pts = sorted((r['tokens'], r[key]) for r in series if r['peer'] == peer and r[key] == r[key])
            if pts:
                ax.plot(*zip(*pts), marker='o', label=peer)
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('tokens (2-D map, k=7, 2 heads x 32)')
        ax.set_ylabel(label)
        ax.grid(True, which='both', alpha=.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', default=None, choices=['fp32', 'fp16', 'bf16'], help='default: bf16 on GPU, fp32 '
                        'on CPU')
    parser.add_argument('--reps', type=int, default=5, help='timed repetitions on CPU (GPU: do_bench)')
    parser.add_argument('--quick', action='store_true', help='3 repetitions')
    parser.add_argument('--filter', default='', help='only problems whose name contains this')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: keep the default)')
    parser.add_argument('--gpu-torch', action='store_true', help='also time the torch backend on GPU')
    parser.add_argument('--out-dir', default=None, help='default: benchmarks/results/<device name>')
    args = parser.parse_args()
    if not args.device.startswith('cuda') and os.environ.get('MALLOC_MMAP_THRESHOLD_') != '65536':
        os.environ['MALLOC_MMAP_THRESHOLD_'] = '65536'  # see _cpu_peak_bytes
        os.execv(sys.executable, [sys.executable, *sys.argv])
    args.dtype = args.dtype or ('bf16' if args.device.startswith('cuda') else 'fp32')
    if args.quick:
        args.reps = 3
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu-{platform.machine()}-' \
        f'{torch.get_num_threads()}threads'
    meta = dict(device=name, dtype=args.dtype, torch=torch.__version__, threads=torch.get_num_threads())
    rows = run_all(args)
    out = Path(args.out_dir or Path(__file__).parent / 'results' / name.replace(' ', '_'))
    out.mkdir(parents=True, exist_ok=True)
    (out / 'ops.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    md = _markdown(rows, meta)
    (out / 'ops.md').write_text(md)
    _plot(rows, out / 'ops.png', f"neighborhood attention on {name} ({args.dtype})")
    print(md)
    print(f'wrote {out}/ops.json, ops.md, ops.png')


if __name__ == '__main__':
    main()
