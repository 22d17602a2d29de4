"""Benchmark RAVLT's attention at ravlt_tiny shapes: ours against the official modules (``classfication/RALA.py``).

Stage 1, RALA (dim 64, 1 head, map = input / 4): :func:`ops.linear_attention` against ``GateLinearAttentionNoSilu``;
stage 3, RoPE softmax attention (dim 256, 4 heads, map = input / 16): SDPA (:func:`ops.dense_attention`) against
``VanillaSelfAttention``, which materialises the N x N matrix. Forward and forward+backward time per input size;
the official modules come from a RALA checkout (``--official``, see tools/ravlt_official_parity.py). On CUDA the
same script times the GPU path.

    python benchmarks/ravlt.py --official /path/to/RALA [--sizes 224 1024] [--device cuda]

Writes ``benchmarks/results/<device>/ravlt.json`` (``<device>`` named as by benchmarks/models.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ops  # noqa: E402
from backbones.ravlt import RALAttention  # noqa: E402
from benchmarks.hilo import _time  # noqa: E402
from benchmarks.models import _cpu_name, device_name  # noqa: E402

STAGES = {'stage 1 RALA': (64, 1, 4, True), 'stage 3 softmax': (256, 4, 16, False)}  # dim, heads, stride, linear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='checkout of github.com/qhfan/RALA')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 1024])
    parser.add_argument('--batch', type=int, default=8, help='batch at 224 (scaled by (224 / size)^2, at least 1)')
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    sys.path.insert(0, str(ROOT / 'tools'))
    from ravlt_official_parity import official_module
    official_mod = official_module(args.official)
    rows = []
    for stage, (dim, heads, stride, linear) in STAGES.items():
        torch.manual_seed(0)
        ours = RALAttention(dim, heads, linear).to(device)
        cls = official_mod.GateLinearAttentionNoSilu if linear else official_mod.VanillaSelfAttention
        official = cls(dim, heads).to(device)
        official.load_state_dict(ours.state_dict())
        angle = official_mod.RoPE(dim, heads).angle.to(device)
        for size in args.sizes:
            side = size // stride
            batch = max(1, round(args.batch * (224 / size) ** 2))
            x = torch.randn(batch, dim, side, side, device=device, requires_grad=True)
            sin, cos = ops.rope_2d(angle, side, side)
            impls = {'ours': lambda t, m=ours, r=(sin, cos): m(t, r),
                     'official': lambda t, m=official, r=(sin, cos): m(t, *r)}
            with torch.no_grad():
                diff = (impls['official'](x) - impls['ours'](x)).abs().max().item()
            print(f'{stage} @ {size}: max |official - ours| = {diff:.2e}')
            for name, fn in impls.items():
                fwd = _time(fn, x, False, args.iters, sync)
                fwd_bwd = _time(fn, x, True, args.iters, sync)
                rows.append(dict(stage=stage, impl=name, input=size, map=f'{side}x{side}', batch=batch,
                                 fwd_ms=round(fwd, 2), fwd_bwd_ms=round(fwd_bwd, 2)))
                print(rows[-1])
    meta = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_name(),
                threads=torch.get_num_threads(), torch=torch.__version__)
    out = ROOT / 'benchmarks' / 'results' / device_name(device)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'ravlt.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + '\n')
    print(f'wrote {out / "ravlt.json"}')


if __name__ == '__main__':
    main()
