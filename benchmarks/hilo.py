"""Benchmark HiLo at LITv2-S stage-3 shapes (dim 384, 12 heads, window 2, alpha 0.9): ours against the official
module and against plain window attention over all heads (our HiLo with alpha 0: every head Hi-Fi).

Forward and forward+backward time per input size (stage-3 map = input / 16: 14x14 at 224, 64x64 at 1024). The
official module is run from a LITv2 checkout (``--official``, see tools/litv2_official_parity.py); without it only
our two rows are measured. On CUDA the same script times the GPU path.

    python benchmarks/hilo.py --official /path/to/LITv2 [--sizes 224 1024] [--device cuda]

Writes ``benchmarks/results/<device>/hilo.json`` (``<device>`` named as by benchmarks/models.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backbones.litv2 import HiLo  # noqa: E402
from benchmarks.models import _cpu_name, device_name  # noqa: E402

DIM, HEADS, WS, ALPHA = 384, 12, 2, 0.9


def _time(fn, x: torch.Tensor, backward: bool, iters: int, sync) -> float:
    """Milliseconds per call of ``fn(x)`` (and a backward of its sum), after one warm-up call."""
    def step():
        if backward:
            fn(x).sum().backward()
        else:
            with torch.no_grad():
                fn(x)
    step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) / iters * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--official', type=Path, help='checkout of github.com/ziplab/LITv2')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 1024])
    parser.add_argument('--batch', type=int, default=8, help='batch at 224 (scaled by (224 / size)^2, at least 1)')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    torch.manual_seed(0)
    ours = HiLo(DIM, HEADS, WS, ALPHA, qkv_bias=True).to(device)
    window_only = HiLo(DIM, HEADS, WS, 0.0, qkv_bias=True).to(device)
    impls = {'ours (HiLo)': lambda x: ours(x), 'ours, window attention only (alpha 0)': lambda x: window_only(x)}
    if args.official:
        sys.path.insert(0, str(ROOT / 'tools'))
        from litv2_official_parity import official_modules
        official = official_modules(args.official)[0].HiLo(DIM, HEADS, qkv_bias=True, window_size=WS, alpha=ALPHA)
        official.load_state_dict(ours.state_dict())
        official.to(device)
        impls['official HiLo'] = lambda x: official(x.flatten(1, 2)).view(x.shape)
    rows = []
    for size in args.sizes:
        side = size // 16
        batch = max(1, round(args.batch * (224 / size) ** 2))
        x = torch.randn(batch, side, side, DIM, device=device, requires_grad=True)
        if args.official:
            with torch.no_grad():
                diff = (impls['official HiLo'](x) - ours(x)).abs().max().item()
            print(f'{size}: max |official - ours| = {diff:.2e}')
        for name, fn in impls.items():
            fwd = _time(fn, x, False, args.iters, sync)
            fwd_bwd = _time(fn, x, True, args.iters, sync)
            rows.append(dict(impl=name, input=size, map=f'{side}x{side}', batch=batch, fwd_ms=round(fwd, 2),
                             fwd_bwd_ms=round(fwd_bwd, 2)))
            print(rows[-1])
    meta = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_name(),
                threads=torch.get_num_threads(), torch=torch.__version__, dim=DIM, heads=HEADS, window=WS, alpha=ALPHA)
    out = ROOT / 'benchmarks' / 'results' / device_name(device)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'hilo.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + '\n')
    print(f'wrote {out / "hilo.json"}')


if __name__ == '__main__':
    main()
