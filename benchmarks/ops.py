"""Benchmark neighborhood attention: our backends against dense SDPA, FlexAttention and the unfused approach.

Forward and forward+backward time and peak memory per problem and implementation:

* ``torch`` / ``triton``: our backends through ``ops.na2d`` (triton on CUDA only); ``triton_tiled``: triton with
  its small-window kernels switched off (on the ``hifi`` problem only: 2x2 windows in 64-token tiles);
* ``sdpa_dense``: ``F.scaled_dot_product_attention`` over all tokens, no mask (the flash kernel on GPU): the
  dense cost that the FLOP bound (dense pairs / sparse pairs) refers to;
* ``sdpa_bias``: the same with the problem's rpb as an additive ``[heads, N, N]`` bias (and its gradient): what the
  bias costs dense attention (on CPU a bias gradient takes SDPA's math path);
* ``sdpa_cudnn``: the same through cuDNN's kernel (CUDA; NATTEN's published ratios are over cuDNN dense);
* ``sdpa_masked``: the same with the pattern (and rpb) as a dense ``[N, N]`` mask (O(N^2) memory);
* ``flex``: compiled FlexAttention with the pattern as a block mask and rpb as a score_mod (CUDA; eager and
  forward-only on CPU, for ``--tiny``);
* ``unfused``: NATTEN <= 0.17 / NAT's approach: gather the k neighbours of every query, QK^T, softmax, AV.

Peers that compute our function (flex, sdpa_masked, unfused) are checked against ours on the same inputs
(``max_abs_diff``). Problems: DiNAT-T stage shapes at 224 (and the scaling series used for the plot), DiNAT stage
1/2 at 1024x1024 input, and NATTEN's published 2-D problem (256x256 tokens, 24 heads, head_dim 128, window 80x80,
with and without stride 16, in fp16 as published), and LITv2-S's Hi-Fi 2x2 windows at 1024x1024 input. Problems
too big for the device are skipped with the reason.

    python benchmarks/ops.py                # CPU subset on CPU, everything on a GPU
    python benchmarks/ops.py --quick        # fewer repetitions
    python benchmarks/ops.py --short --time-budget 150   # the GPU suite's part: targets' problems and peers
    python benchmarks/ops.py --tiny         # CPU rehearsal of --short at toy sizes

Writes ``benchmarks/results/<device>/ops.{json,md,png}`` (the JSON after every row, so a run stopped from
outside keeps what it measured).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ops  # noqa: E402
from benchmarks._common import TIME_BUDGET, device_name, loadavg, measure_op  # noqa: E402
from ops.na.flops import na_pairs  # noqa: E402
from ops.na.pattern import axis_window, dense_mask, dense_rpb_index, make_spec  # noqa: E402

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# NATTEN's published H100 fp16 forward speed-ups over cuDNN dense attention on its problem (FNA/GNA papers)
NATTEN_PUBLISHED = {'natten_256x256_w80': 6.0, 'natten_256x256_w80_s16': 12.3}


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
    dtype: str | None = None  # overrides the run's dtype (NATTEN's problem: fp16, as published)

    @property
    def tokens(self) -> int:
        return self.shape[0] * self.shape[1]


def _dinat(on_gpu: bool) -> list[Problem]:
    b = 32 if on_gpu else 4  # CPU: batch 4, the inference batch of benchmarks/models.py
    out = []
    # DiNAT-T at 224: stages 56/28/14/7 with 2/4/8/16 heads of 32 channels, k=7, dilations (1, 8/4/2/1)
    for size, heads, dil in ((56, 2, 8), (28, 4, 4), (14, 8, 2), (7, 16, 1)):
        for d in sorted({1, dil}):
            out.append(Problem(f'dinat224_{size}x{size}_d{d}', 'dinat224', (size, size), heads, 32, 7, dilation=d,
                               batch=b))
    # DiNAT-T at 1024x1024 input: stage 1 (256x256, dilation up to 36) and stage 2 (128x128)
    b = 4 if on_gpu else 1
    out += [Problem('dinat1024_256x256_d1', 'dinat1024', (256, 256), 2, 32, 7, batch=b),
            Problem('dinat1024_256x256_d32', 'dinat1024', (256, 256), 2, 32, 7, dilation=32, batch=b),
            Problem('dinat1024_128x128_d1', 'dinat1024', (128, 128), 4, 32, 7, batch=b)]
    return out


# NATTEN's published problem (FNA/GNA papers): 256x256 tokens, 24 heads, head_dim 128, window 80x80
NATTEN = [Problem('natten_256x256_w80', 'natten', (256, 256), 24, 128, 80, rpb=False, gpu_only=True, dtype='fp16'),
          Problem('natten_256x256_w80_s16', 'natten', (256, 256), 24, 128, 80, stride=16, rpb=False, gpu_only=True,
                  dtype='fp16')]

def _hifi(on_gpu: bool) -> list[Problem]:
    """LITv2-S's Hi-Fi heads at a 1024x1024 input: 2 heads of 32 in 2x2 windows of the 64x64 stage-3 map (the
    triton backend's small-window kernels; peer ``triton_tiled``: the same kernels' 64-token tiles)."""
    return [Problem('litv2s1024_hifi_64x64_w2', 'hifi', (64, 64), 2, 32, 2, stride=2, rpb=False,
                    batch=8 if on_gpu else 1)]


# --tiny: the --short list at toy sizes (same series, rpb and stride/dilation mix), for the CPU rehearsal
TINY = [Problem('tiny_natten_24x24_w8', 'natten', (24, 24), 2, 16, 8, rpb=False),
        Problem('tiny_natten_24x24_w8_s4', 'natten', (24, 24), 2, 16, 8, stride=4, rpb=False),
        Problem('tiny_dinat224_14x14_d2', 'dinat224', (14, 14), 2, 16, 7, dilation=2),
        Problem('tiny_hifi_16x16_w2', 'hifi', (16, 16), 2, 16, 2, stride=2, rpb=False)]


def problems(on_gpu: bool, mode: str = 'full') -> list[Problem]:
    """``full``: every series; ``short``: the targets' problems, most important first (NATTEN's, then DiNAT's);
    ``tiny``: toy versions of ``short``."""
    if mode == 'tiny':
        return list(TINY)
    if mode == 'short':
        return NATTEN + _dinat(on_gpu) + _hifi(on_gpu)
    out = _dinat(on_gpu) + _hifi(on_gpu)
    # scaling series for the plot: 2-D, k=7, 2 heads of 32
    for size in (16, 32, 64, 96, 128) + ((192, 256) if on_gpu else ()):
        out.append(Problem(f'scale_{size}x{size}', 'scaling', (size, size), 2, 32, 7, batch=1))
    return out + NATTEN


def _inputs(p: Problem, device, dtype, grad: bool):
    """The same random inputs for every peer (drawn on the device: NATTEN's problem is 600 M values)."""
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (p.batch, *p.shape, p.heads, p.head_dim)
    q, k, v = (torch.randn(shape, generator=gen, device=device).to(dtype).requires_grad_(grad) for _ in range(3))
    rpb = None
    if p.rpb:
        rpb = (torch.randn(p.heads, 2 * p.kernel - 1, 2 * p.kernel - 1, generator=gen, device=device) * .1).to(dtype)
        rpb.requires_grad_(grad)
    return q, k, v, rpb


# --- peers -------------------------------------------------------------------------------------------------------

def _ours(backend, context=contextlib.nullcontext):
    def run(p, q, k, v, rpb):
        return ops.na2d(q, k, v, p.kernel, p.stride, p.dilation, rpb=rpb, backend=backend)
    run.context = context  # entered around the forward and the backward of a call
    return run


def _bhnd(x):
    return x.flatten(1, 2).transpose(1, 2)


def _sdpa(kernel: str | None):
    """Dense SDPA over all tokens; ``kernel`` ('flash' / 'cudnn') pins SDPA's CUDA kernel (None: its default)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    pinned = {'flash': SDPBackend.FLASH_ATTENTION, 'cudnn': SDPBackend.CUDNN_ATTENTION}.get(kernel)

    def run(p, q, k, v, rpb):
        if pinned is None or q.device.type != 'cuda' or (kernel == 'flash' and q.dtype == torch.float32):
            out = F.scaled_dot_product_attention(_bhnd(q), _bhnd(k), _bhnd(v))  # flash has no fp32 kernel
        else:
            with sdpa_kernel([pinned]):
                out = F.scaled_dot_product_attention(_bhnd(q), _bhnd(k), _bhnd(v))
        return out.transpose(1, 2).reshape(q.shape)
    return run


class _Biased:
    """Dense SDPA over all tokens with the problem's rpb as an additive ``[heads, N, N]`` bias, gathered on every
    call (with its gradient): what a relative position bias costs dense attention. A bias that needs a gradient
    takes SDPA's math path on CPU (the flash kernel has no bias gradient). On the 7x7 stage (window = map) it is
    exactly our function, elsewhere a stand-in of the same cost (each pair's offset divided by the dilation and
    clamped into the table)."""

    def __init__(self):
        self.key = None

    def __call__(self, p, q, k, v, rpb):
        if self.key != (p, q.device):
            pos = [torch.arange(n, device=q.device) for n in p.shape]
            rel = [((x[None, :] - x[:, None]) // p.dilation + p.kernel - 1).clamp(0, 2 * p.kernel - 2) for x in pos]
            index = rel[0][:, None, :, None] * (2 * p.kernel - 1) + rel[1][None, :, None, :]
            self.index, self.key = index.reshape(p.tokens * p.tokens), (p, q.device)
        bias = rpb.reshape(rpb.shape[0], -1)[:, self.index].view(1, -1, p.tokens, p.tokens)
        out = F.scaled_dot_product_attention(_bhnd(q), _bhnd(k), _bhnd(v), attn_mask=bias)
        return out.transpose(1, 2).reshape(q.shape)


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


def _flex(compiled: bool):
    """FlexAttention with our pattern as a block mask and rpb as a score_mod; ``compiled=False`` runs it eagerly
    (PyTorch's unfused fallback: the CPU rehearsal checks the mask, not the speed)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if compiled:
        import torch._dynamo.config as dynamo_config
        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 64)  # one graph per problem and mode
    else:
        warnings.filterwarnings('ignore', message='flex_attention called without torch.compile')
    attend = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
    cache = {}

    def run(p, q, k, v, rpb):
        key = (p, q.device)
        if key not in cache:
            starts = [axis_window(n, p.kernel, p.stride, p.dilation, False, q.device)[0] for n in p.shape]
            w, kk, dl = p.shape[1], p.kernel, p.dilation

            def mask_mod(b, h, qi, ki):
                qy, qx, ky, kx = qi // w, qi % w, ki // w, ki % w
                dy, dx = ky - starts[0][qy], kx - starts[1][qx]
                return ((dy >= 0) & (dy < kk * dl) & (dy % dl == 0) & (dx >= 0) & (dx < kk * dl)
                        & (dx % dl == 0))

            n = p.tokens
            # compiled on CUDA: the eager construction materialises [N, N] index tensors (NATTEN's problem: 34 GB each)
            cache[key] = create_block_mask(mask_mod, None, None, n, n, device=q.device, _compile=compiled)
        block_mask = cache[key]
        w, kk, dl = p.shape[1], p.kernel, p.dilation
        score_mod = None
        if rpb is not None:
            table = rpb.reshape(rpb.shape[0], -1)

            def score_mod(score, b, h, qi, ki):  # also evaluated on masked pairs: clamp into the table
                ry = ((ki // w - qi // w) // dl + kk - 1).clamp(0, 2 * kk - 2)
                rx = ((ki % w - qi % w) // dl + kk - 1).clamp(0, 2 * kk - 2)
                return score + table[h, ry * (2 * kk - 1) + rx]
        out = attend(_bhnd(q), _bhnd(k), _bhnd(v), score_mod=score_mod, block_mask=block_mask)
        return out.transpose(1, 2).reshape(q.shape)
    return run


# --- measurement -------------------------------------------------------------------------------------------------

def _fits(p: Problem, peer: str, on_gpu: bool, dtype) -> str | None:
    """Reason to skip ``peer`` on ``p`` (memory, device or scope), or None."""
    n = p.tokens
    elem = torch.finfo(dtype).bits // 8
    if p.gpu_only and not on_gpu:
        return 'GPU-sized problem'
    if peer == 'sdpa_cudnn' and p.series != 'natten':
        return "cuDNN dense only on NATTEN's problem (its published baseline)"
    if peer == 'sdpa_masked' and p.batch * p.heads * n * n * elem * 3 > (8 << 30 if on_gpu else 1 << 30):
        return f'dense [N, N] mask/logits of {n} tokens too large'
    if peer == 'sdpa_bias' and not p.rpb:
        return 'no rpb'
    if peer == 'sdpa_bias' and p.batch * p.heads * n * n * elem * 3 > (8 << 30 if on_gpu else 1 << 30):
        return f'dense [N, N] bias/logits of {n} tokens too large'
    if peer == 'sdpa_dense' and not on_gpu and p.batch * p.heads * n * n * 4 * 2 > 1 << 30:
        return f'dense CPU attention over {n} tokens too large'
    if peer == 'unfused' and p.batch * p.heads * n * p.kernel ** 2 * p.head_dim * elem * 4 > (16 << 30 if on_gpu
                                                                                                else 2 << 30):
        return 'gathered neighbours too large'
    if peer == 'unfused' and p.stride > 1:
        return 'NATTEN 0.17 has no stride'
    if peer == 'triton_tiled' and p.series != 'hifi':
        return 'the same kernels as triton here (no small windows)'
    return None


def _mode_skip(peer: str, mode: str, on_gpu: bool) -> str | None:
    if peer == 'flex' and mode == 'fwd_bwd' and not on_gpu:
        return 'FlexAttention has no CPU backward'
    return None


def _make_call(fn, p: Problem, q, k, v, rpb, mode: str):
    context = getattr(fn, 'context', contextlib.nullcontext)
    if mode == 'fwd':
        def call():
            with torch.no_grad(), context():
                return fn(p, q, k, v, rpb)
        return call
    leaves = [t for t in (q, k, v, rpb) if t is not None]
    grad = torch.randn_like(q)

    def call():
        with context():
            return torch.autograd.grad(fn(p, q, k, v, rpb), leaves, grad, allow_unused=True)
    return call


# peers computing our function: their output is checked
SAME_FUNCTION = ('flex', 'sdpa_masked', 'unfused', 'triton_tiled')


def select_peers(args, on_gpu: bool) -> tuple[dict, list[str]]:
    """The peers to run (ours first) and those left out with the reason, for the device and mode."""
    short = args.short or args.tiny
    peers = {'torch': _ours('torch'), 'sdpa_dense': _sdpa('flash'), 'sdpa_bias': _Biased(), 'sdpa_masked': _Masked(),
             'unfused': _Unfused()}
    left_out = []
    if on_gpu:
        tiled_only = ops.get_backend('na', 'triton').extra['tiled_only']
        peers = {'triton': _ours('triton'), 'triton_tiled': _ours('triton', tiled_only),
                 'flex': _flex(compiled=True), **peers, 'sdpa_cudnn': _sdpa('cudnn')}
        if not args.gpu_torch:
            peers.pop('torch')
    else:
        left_out += ['triton: needs CUDA', 'triton_tiled: needs CUDA', 'sdpa_cudnn: needs CUDA']
        if args.tiny:
            peers = {'torch': peers['torch'], 'flex': _flex(compiled=False), **peers}
            left_out.append('flex: compiled only on CUDA (eager, forward only here)')
        else:
            left_out.append('flex: needs CUDA')
    if short:
        for name in ('sdpa_bias', 'sdpa_masked', 'unfused'):
            peers.pop(name)
        left_out.append('sdpa_bias, sdpa_masked, unfused: not in the short mode')
    if args.peers:
        wanted = args.peers.split(',')
        unknown = [p for p in wanted if p not in peers]
        if unknown:
            raise SystemExit(f'--peers: {unknown} not available here; choose from {list(peers)}')
        left_out += [f'{p}: not in --peers' for p in peers if p not in wanted]
        peers = {p: fn for p, fn in peers.items() if p in wanted}
    return peers, left_out


def run_all(args, save=None) -> tuple[list[dict], list[dict]]:
    """Measure every (problem, peer, mode); ``save(rows, skipped)`` after each row. Once ``args.time_budget``
    seconds have passed, what is left is skipped (reason :data:`TIME_BUDGET`)."""
    device = torch.device(args.device)
    on_gpu = device.type == 'cuda'
    deadline = time.monotonic() + args.time_budget if args.time_budget else math.inf
    peers, _ = select_peers(args, on_gpu)
    ours = next(iter(peers))
    mode = 'tiny' if args.tiny else 'short' if args.short else 'full'
    rows, skipped = [], []

    def skip(p, peer, reason, mode=None):
        skipped.append(dict(problem=p.name, peer=peer, mode=mode, reason=reason))
        print(f"skip {p.name:28s} {peer:12s} {mode or '':8s}{reason}", flush=True)

    for p in problems(on_gpu, mode):
        if args.filter and args.filter not in p.name:
            continue
        dtype = DTYPES[p.dtype or args.dtype]
        spec = make_spec(p.shape, p.kernel, p.stride, p.dilation)
        flop_bound = p.tokens ** 2 / na_pairs(p.shape, spec)
        ours_out = None
        for peer, fn in peers.items():
            reason = TIME_BUDGET if time.monotonic() > deadline else _fits(p, peer, on_gpu, dtype)
            if reason:
                skip(p, peer, reason)
                continue
            row = dict(problem=p.name, series=p.series, tokens=p.tokens, peer=peer, flop_bound=flop_bound,
                       **{k: v for k, v in asdict(p).items() if k not in ('name', 'series', 'dtype')},
                       dtype=str(dtype).removeprefix('torch.'))
            for m in ('fwd', 'fwd_bwd'):
                row[f'{m}_ms'], row[f'{m}_peak_mb'], row[f'{m}_spread'] = math.nan, math.nan, math.nan
                reason = TIME_BUDGET if time.monotonic() > deadline else _mode_skip(peer, m, on_gpu)
                if reason:
                    skip(p, peer, reason, m)
                    continue
                inputs = _inputs(p, device, dtype, grad=m == 'fwd_bwd')
                try:
                    if m == 'fwd' and (peer == ours or peer in SAME_FUNCTION and ours_out is not None):
                        with torch.no_grad():
                            out = fn(p, *inputs).float()
                        if peer == ours:
                            ours_out = out
                        else:
                            row['max_abs_diff'] = (out - ours_out).abs().max().item()
                        del out
                    ms, peak, spread = measure_op(_make_call(fn, p, *inputs, m), device, args.reps, mode != 'full',
                                                  cpu_peak=mode != 'tiny')
                    row[f'{m}_ms'], row[f'{m}_peak_mb'], row[f'{m}_spread'] = ms, peak / 2 ** 20, spread
                except Exception as e:  # noqa: BLE001  (recorded: one failing peer does not stop the run)
                    row[f'{m}_error'] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                    print(f"fail {p.name:28s} {peer:12s} {m}: {row[f'{m}_error'][:100]}", flush=True)
                del inputs
                if on_gpu:
                    torch.cuda.empty_cache()
            rows.append(row)
            diff = f" | vs ours {row['max_abs_diff']:.1e}" if 'max_abs_diff' in row else ''
            print(f"{p.name:28s} {peer:12s} fwd {row['fwd_ms']:9.3f} ms {row['fwd_peak_mb']:9.1f} MB | fwd+bwd "
                  f"{row['fwd_bwd_ms']:9.3f} ms {row['fwd_bwd_peak_mb']:9.1f} MB{diff}", flush=True)
            if save is not None:
                save(rows, skipped)
    return rows, skipped


def comparisons(rows: list[dict]) -> list[dict]:
    """Per problem, peer time / our time (fwd, fwd+bwd; > 1: ours faster) against dense flash, cuDNN dense and
    FlexAttention, measured in the same run, with the issue's target where one applies: faster than FlexAttention
    fwd+bwd on DiNAT's shapes; NATTEN's published fp16 forward ratio over cuDNN dense on its problem."""
    ours = 'triton' if any(r['peer'] == 'triton' for r in rows) else 'torch'
    by = {(r['problem'], r['peer']): r for r in rows}
    out = []
    for r in rows:
        if r['peer'] != ours:
            continue
        for peer in ('sdpa_dense', 'sdpa_bias', 'sdpa_cudnn', 'flex', 'triton_tiled'):
            p = by.get((r['problem'], peer))
            if p is None:
                continue
            entry = dict(problem=r['problem'], series=r['series'], dtype=r['dtype'], ours=ours, peer=peer)
            for m in ('fwd', 'fwd_bwd'):
                a, b = r[f'{m}_ms'], p[f'{m}_ms']
                entry[m] = b / a if a == a and b == b and a > 0 else None
            entry['target_mode'] = entry['target'] = None
            if peer == 'flex' and r['series'].startswith('dinat'):
                entry['target_mode'], entry['target'] = 'fwd_bwd', 1.0
            elif peer == 'sdpa_cudnn' and r['problem'] in NATTEN_PUBLISHED:
                entry['target_mode'], entry['target'] = 'fwd', NATTEN_PUBLISHED[r['problem']]
            elif peer == 'triton_tiled':  # the small-window kernels must beat the tiles they replace
                entry['target_mode'], entry['target'] = 'fwd_bwd', 1.0
            got = entry[entry['target_mode']] if entry['target_mode'] else None
            entry['met'] = None if got is None or entry['target'] is None else got >= entry['target']
            out.append(entry)
    return out


def _ratio(x) -> str:
    return '-' if x is None else f'{x:.2f}x'


def _markdown(rows: list[dict], skipped: list[dict], meta: dict) -> str:
    lines = [f"# ops benchmark on {meta['device']} ({meta['dtype']}, torch {meta['torch']}, mode {meta['mode']})",
             '',
             'Time in ms (GPU: median of do_bench; CPU: minimum of the runs, thread CPU time with one torch '
             'thread); memory is the peak in MB above the inputs (GPU: allocator peak; CPU: resident-set peak); '
             '`x dense` is the speed-up over `sdpa_dense` (all tokens, no mask; flash on GPU) in the same run; '
             '`bound` = dense pairs / pattern pairs; `spread` = (p80 - p20) / median of the fwd+bwd timings '
             '(CPU: (max - min) / min); `vs ours` = max abs difference of the forward output from ours (peers '
             'computing the same function).', '',
             f"Machine load average (1/5/15 min) at start {meta.get('load_start', '?')}, at end "
             f"{meta.get('load_end', '?')}; {meta['threads']} torch thread(s); peers timed one after the other "
             'in the same run.', '',
             '| problem | dtype | peer | fwd ms | fwd+bwd ms | fwd MB | fwd+bwd MB | x dense fwd | x dense fwd+bwd | '
             'bound | spread | vs ours |',
             '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    dense = {r['problem']: r for r in rows if r['peer'] == 'sdpa_dense'}
    for r in rows:
        d = dense.get(r['problem'])
        sf = _ratio(d['fwd_ms'] / r['fwd_ms']) if d and r['fwd_ms'] == r['fwd_ms'] else '-'
        sb = _ratio(d['fwd_bwd_ms'] / r['fwd_bwd_ms']) if d and r['fwd_bwd_ms'] == r['fwd_bwd_ms'] else '-'
        diff = f"{r['max_abs_diff']:.1e}" if 'max_abs_diff' in r else '-'
        lines.append(f"| {r['problem']} | {r['dtype']} | {r['peer']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
                     f"{r['fwd_peak_mb']:.1f} | {r['fwd_bwd_peak_mb']:.1f} | {sf} | {sb} | {r['flop_bound']:.1f} | "
                     f"{r['fwd_bwd_spread']:.2f} | {diff} |")
    lines += ['', comparisons_markdown(comparisons(rows), meta['device_type'] == 'cuda')]
    if skipped:
        lines += ['## Skipped', ''] + [f"- {s['problem']} / {s['peer']}{' ' + s['mode'] if s['mode'] else ''}: "
                                        f"{s['reason']}" for s in skipped] + ['']
    return '\n'.join(lines)


def comparisons_markdown(entries: list[dict], on_gpu: bool) -> str:
    """The comparisons as a markdown section (also printed by the GPU suite)."""
    lines = ['## Comparisons in this run: peer time / our time (> 1: ours faster)', '']
    if not on_gpu:
        lines += ['CPU run: ours is the torch backend and the targets are GPU targets; indicative only.', '']
    lines += ['| problem | dtype | ours vs | fwd | fwd+bwd | target | met |', '|---|---|---|---:|---:|---|---|']
    for e in entries:
        target = f"{e['target_mode']} >= {e['target']}x" if e['target'] else '-'
        met = '-' if e['met'] is None else 'yes' if e['met'] else 'NO'
        lines.append(f"| {e['problem']} | {e['dtype']} | {e['ours']} vs {e['peer']} | {_ratio(e['fwd'])} | "
                     f"{_ratio(e['fwd_bwd'])} | {target} | {met} |")
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
    parser.add_argument('--dtype', default=None, choices=list(DTYPES), help='default: bf16 on GPU, fp32 on CPU '
                        "(NATTEN's problem always runs in fp16, as published)")
    parser.add_argument('--reps', type=int, default=5, help='timed repetitions on CPU (GPU: do_bench)')
    parser.add_argument('--quick', action='store_true', help='3 repetitions')
    parser.add_argument('--short', action='store_true', help="the targets' problems (NATTEN's, DiNAT's) and peers "
                        '(ours, flash and cuDNN dense, FlexAttention), 50 ms do_bench windows')
    parser.add_argument('--tiny', action='store_true', help='--short at toy sizes: the CPU rehearsal')
    parser.add_argument('--time-budget', type=float, default=0, help='seconds; what is left then is skipped and '
                        'listed (0: no limit)')
    parser.add_argument('--filter', default='', help='only problems whose name contains this')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: keep the default)')
    parser.add_argument('--gpu-torch', action='store_true', help='also time the torch backend on GPU')
    parser.add_argument('--no-plot', action='store_true', help='do not write ops.png')
    parser.add_argument('--out-dir', default=None, help='default: benchmarks/results/<device name>')
    parser.add_argument('--peers', default='', help='comma-separated subset of the peers (default: all that run here)')
    parser.add_argument('--name', default='ops', help='stem of the result files (default: ops)')
    args = parser.parse_args()
    if not args.device.startswith('cuda') and os.environ.get('MALLOC_MMAP_THRESHOLD_') != '65536':
        os.environ['MALLOC_MMAP_THRESHOLD_'] = '65536'  # freed tensors return to the OS: see benchmarks/_common.py
        os.execv(sys.executable, [sys.executable, *sys.argv])
    args.dtype = args.dtype or ('bf16' if args.device.startswith('cuda') else 'fp32')
    if args.quick or args.tiny:
        args.reps = 3
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else device_name(device)
    mode = 'tiny' if args.tiny else 'short' if args.short else 'full'
    _, left_out = select_peers(args, device.type == 'cuda')
    meta = dict(device=name, device_type=device.type, dtype=args.dtype, torch=torch.__version__,
                threads=torch.get_num_threads(), mode=mode, time_budget_s=args.time_budget, peers_left_out=left_out)
    out = Path(args.out_dir or Path(__file__).parent / 'results' / device_name(device))
    out.mkdir(parents=True, exist_ok=True)
    for line in left_out:
        print(f'peer left out: {line}')

    def save(rows, skipped, complete=False):
        data = dict(meta=dict(meta, complete=complete), rows=rows, skipped=skipped, comparisons=comparisons(rows))
        (out / f'{args.name}.json').write_text(json.dumps(data, indent=1))

    t0 = time.monotonic()
    meta['load_start'] = loadavg()
    rows, skipped = run_all(args, save)
    meta['elapsed_s'], meta['load_end'] = round(time.monotonic() - t0, 1), loadavg()
    save(rows, skipped, complete=not any(s['reason'] == TIME_BUDGET for s in skipped))
    md = _markdown(rows, skipped, meta)
    (out / f'{args.name}.md').write_text(md)
    written = f'{args.name}.json, {args.name}.md'
    if not args.no_plot and any(r['series'] == 'scaling' for r in rows):
        _plot(rows, out / f'{args.name}.png', f"neighborhood attention on {name} ({args.dtype})")
        written += f', {args.name}.png'
    print(md)
    print(f'wrote {out}/{written}')


if __name__ == '__main__':
    main()
