"""Benchmark the linear-attention families against the official code: RAVLT (qhfan/RALA) and L2ViT.

* Attention modules at the ``*_tiny`` shapes, ours vs the official module holding the same weights, at each input
  size (default 224 and 1024; batch 8 at 224, scaled by (224 / size)^2): forward and forward+backward time and the
  forward+backward peak memory, and the bf16-autocast error of each against its float64 output:

  - RALA, ravlt_tiny stage 1 (dim 64, 1 head, map = input / 4): :func:`ops.linear_attention` vs
    ``GateLinearAttentionNoSilu``;
  - RAVLT stage-3 softmax attention (dim 256, 4 heads, input / 16): SDPA (:func:`ops.dense_attention`) vs
    ``VanillaSelfAttention``, which materialises the N x N matrix;
  - L2ViT LGA, l2vit_tiny stage 1 (dim 96, 3 heads, input / 4): :func:`ops.linear_attention` (state and
    normaliser in fp32 under autocast) vs the official ``LinearAttention`` (its matmuls in bf16 under autocast).

* ravlt_tiny and l2vit_tiny at 224: inference img/s (eval forward) and training img/s (forward, cross-entropy,
  backward, AdamW step) with peak memory, ours vs the official model with the SAME weights (the official random
  init moved off its init by the parity script's ``perturb_``, mapped through our checkpoint fit; the
  fp32 logit difference is recorded as a check). Drop path 0 in both.

Timing and memory are benchmarks/_common.py's ``measure``: on CUDA, CUDA-event medians and ``max_memory_allocated``
(model rows in bf16 autocast and channels-last); on CPU, the median process CPU time with one torch thread and the
resident-set growth during one call (fp32). The official modules come from checkouts given by ``--rala`` and
``--l2vit`` (imported as by tools/ravlt_official_parity.py and tools/l2vit_official_parity.py).

    python benchmarks/linear.py --rala /path/to/RALA --l2vit /path/to/L2ViT [--sizes 224 1024] [--device cuda]

Writes ``benchmarks/results/<device>/linear.{json,md}`` (``<device>`` as benchmarks/_common.py names it).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tools'))

import _parity  # noqa: E402  (tools/: our model loaded as the parity scripts do)
import timm  # noqa: E402

import ops  # noqa: E402
from backbones import l2vit, ravlt  # noqa: E402
from benchmarks import _common as bench  # noqa: E402

MODEL_SIZE = 224


def _modules(official: dict[str, Any], device: torch.device) -> dict[str, tuple[Any, ...]]:
    """name -> (stride, ours, official, make(batch, side) -> (x, ours_fn, official_fn)), same weights in both."""
    torch.manual_seed(0)
    out = {}
    for name, (dim, heads, stride, linear) in {'RALA (ravlt_tiny stage 1)': (64, 1, 4, True),
                                              'RAVLT softmax (ravlt_tiny stage 3)': (256, 4, 16, False)}.items():
        ours = ravlt.RALAttention(dim, heads, linear).to(device)
        mod = official['rala']
        theirs = (mod.GateLinearAttentionNoSilu if linear else mod.VanillaSelfAttention)(dim, heads).to(device)
        theirs.load_state_dict(ours.state_dict())
        angle = mod.RoPE(dim, heads).angle.to(device)

        def make(batch, side, ours=ours, theirs=theirs, angle=angle, dim=dim):
            x = torch.randn(batch, dim, side, side, device=device)
            sin, cos = ops.rope_2d(angle, side, side)
            return (x, lambda t: ours(t, (sin.to(t.dtype), cos.to(t.dtype))),
                    lambda t: theirs(t, sin.to(t.dtype), cos.to(t.dtype)))
        out[name] = (stride, ours, theirs, make)
    dim, heads = 96, 3
    ours = l2vit.LinearAttention(dim, heads).to(device)
    theirs = official['l2vit'].LinearAttention(dim, heads, qkv_bias=True).to(device)
    theirs.load_state_dict(ours.state_dict())

    def make_lga(batch, side):
        x = torch.randn(batch, side, side, dim, device=device)
        return x, ours, lambda t: theirs(t.flatten(1, 2)).view(t.shape)
    out['L2ViT LGA (l2vit_tiny stage 1)'] = (4, ours, theirs, make_lga)
    return out


def _bf16_error(fn: Callable, x: torch.Tensor, module: torch.nn.Module) -> float:
    """Relative L2 error of ``fn(x)`` under bf16 autocast against the same module run in float64."""
    with torch.no_grad():
        module.double()
        exact = fn(x.double())
        module.float()
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            got = fn(x)
    return ((got.double() - exact).norm() / exact.norm()).item()


def bench_attention(args: argparse.Namespace, official: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, (stride, ours, theirs, make) in _modules(official, args.device).items():
        for size in args.sizes:
            side = size // stride
            batch = max(1, round(args.batch * (224 / size) ** 2))
            x, ours_fn, official_fn = make(batch, side)
            with torch.no_grad():
                diff = (official_fn(x) - ours_fn(x)).abs().max().item()
            for impl, fn, module in (('ours', ours_fn, ours), ('official', official_fn, theirs)):
                xg = x.clone().requires_grad_()

                def fwd(fn=fn, x=x):
                    with torch.no_grad():
                        fn(x)

                def fwd_bwd(fn=fn, xg=xg):
                    fn(xg).sum().backward()
                t_fwd = bench.measure(fwd, args.device, args.iters, args.warmup, False)
                t_bwd = bench.measure(fwd_bwd, args.device, args.iters, args.warmup, args.cpu_memory)
                module.zero_grad(set_to_none=True)
                row = dict(attention=name, impl=impl, input=size, map=f'{side}x{side}', batch=batch,
                           fwd_ms=round(t_fwd['ms'], 2), fwd_bwd_ms=round(t_bwd['ms'], 2),
                           fwd_bwd_peak_mb=round(t_bwd['peak_mb'], 1), bf16_rel_err=_bf16_error(fn, x, module))
                if impl == 'official':
                    row['max_abs_diff_vs_ours'] = diff
                rows.append(row)
                print(row, flush=True)
    return rows


def _official_models(official: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """model name -> the official model with perturbed random weights."""
    import l2vit_official_parity as l2p
    import ravlt_official_parity as rap
    rav = rap.official_model(official['rala'], _parity.variant_args('ravlt_tiny'))
    rap.perturb_(rav, torch.Generator().manual_seed(0))
    l2 = l2p.official_model(official['l2vit'], _parity.variant_args('l2vit_tiny'))
    l2p.perturb_(l2, torch.Generator().manual_seed(0))
    l2.num_classes = l2.head.out_features  # what the training step draws targets from (timm models have it)
    return {'ravlt_tiny': rav, 'l2vit_tiny': l2}


def bench_models(args: argparse.Namespace, official: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, theirs in _official_models(official).items():
        ours = _parity.load_official_(timm.create_model(name, drop_path_rate=0.).eval(), theirs.state_dict())
        diff = bench.logit_difference(theirs.eval(), ours, MODEL_SIZE, f'{name} @ {MODEL_SIZE}')
        models = {'ours': ours, 'official': theirs}
        del ours, theirs
        for impl in list(models):  # each model dropped after its rows: the next model's peak excludes it
            rows.append(bench.model_row(models.pop(impl), args, args.model_batch, MODEL_SIZE, model=name, impl=impl,
                                        img_size=MODEL_SIZE))
            if impl == 'official':
                rows[-1]['max_abs_diff_vs_ours'] = diff
    return rows


def model_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model, ours / official: img/s (> 1: ours faster) and peak MB (< 1: ours smaller), per mode."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r['model'] for r in rows):
        by = {r['impl']: r for r in rows if r['model'] == name}
        ratio = bench.pair_ratios(by['ours'], by['official'])
        if ratio:
            out[name] = ratio
    return out


def markdown(result: dict[str, Any]) -> str:
    meta = result['meta']
    lines = bench.intro('Linear-attention families (RAVLT, L2ViT) vs the official code', meta,
                        f"Model rows: AMP {meta['amp_dtype']}, channels-last {meta['channels_last']}. Random inputs.",
                        'resident-set growth during one call, above weights and inputs (n/a: not measurable here)',
                        cpu_note='The memory of small calls (tens of MB) is noisy: pages freed by the previous call '
                        'and reused read as no growth.')
    mb = lambda v: f'{v:.1f}' if v >= 0 else 'n/a'  # noqa: E731
    lines += ['', '## Attention modules at the tiny models\' shapes', '',
              'bf16 err: relative L2 error under bf16 autocast against the module in float64.', '',
              '| attention | impl | input | map | batch | fwd ms | fwd+bwd ms | fwd+bwd MB | bf16 err | '
              'max abs diff vs ours |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in result['attention']:
        diff = f"{r['max_abs_diff_vs_ours']:.1e}" if 'max_abs_diff_vs_ours' in r else ''
        lines.append(f"| {r['attention']} | {r['impl']} | {r['input']} | {r['map']} | {r['batch']} | {r['fwd_ms']} | "
                     f"{r['fwd_bwd_ms']} | {mb(r['fwd_bwd_peak_mb'])} | {r['bf16_rel_err']:.1e} | {diff} |")
    lines += bench.model_table(f'Whole models at {MODEL_SIZE}: inference and training (forward + backward + AdamW '
                               'step)', result['models'], {'model': 'model', 'impl': 'impl', 'params (M)': 'params_m'})
    for name, rat in result['model_ratios'].items():
        diff = next(r['max_abs_diff_vs_ours'] for r in result['models']
                    if r['model'] == name and r['impl'] == 'official')
        lines += ['', f'{name}, ours / official (img/s > 1: ours faster; memory < 1: ours smaller): ' + ', '.join(
            f'{k} {v:.2f}' for k, v in rat.items()) + f'. Same weights: max abs fp32 logit difference {diff:.1e}.']
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rala', type=Path, required=True, help='checkout of github.com/qhfan/RALA')
    parser.add_argument('--l2vit', type=Path, required=True, help='checkout of github.com/ChuanyangZheng/L2ViT')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 1024], help='attention input sizes')
    parser.add_argument('--batch', type=int, default=8, help='attention batch at 224 (scaled by (224 / size)^2)')
    parser.add_argument('--model-batch', type=int, help='model batch (default: 128 on CUDA, 4 on CPU; halved on '
                        'CUDA out-of-memory)')
    bench.add_run_args(parser, amp_help=None)
    args = parser.parse_args()
    bench.prepare_run(args)
    import l2vit_official_parity
    import ravlt_official_parity
    official = dict(rala=ravlt_official_parity.official_module(args.rala),
                    l2vit=l2vit_official_parity.official_module(args.l2vit))
    meta = bench.run_meta(args, channels_last=args.channels_last)
    attention = bench_attention(args, official)
    models = bench_models(args, official)
    meta['loadavg_after'] = bench.loadavg()
    result = dict(meta=meta, attention=attention, models=models, model_ratios=model_ratios(models))
    bench.write_results('linear', result, markdown(result), args.device)


if __name__ == '__main__':
    main()
