"""Benchmark LITv2 against the official code: HiLo at LITv2-S stage-3 shapes, and the whole LITv2-S model.

* HiLo (dim 384, 12 heads, window 2, alpha 0.9): ours, the official module, and plain window attention over all
  heads (our HiLo with alpha 0: every head Hi-Fi); forward and forward+backward time per input size (stage-3 map
  = input / 16: 14x14 at 224, 64x64 at 1024). On CUDA also that window attention with the triton backend's
  small-window kernels switched off, i.e. the 2 x 2 windows in the tiled kernels' 64-token tiles (what ran before
  ``ops/na/backends/_triton_small.py``).
* LITv2-S at 224: inference img/s (eval forward) and training img/s (forward, cross-entropy, backward, AdamW step)
  with peak memory, ours vs the official model holding the SAME weights (the official random init, moved off its
  init by tools/litv2_official_parity.py's ``perturb_``, mapped through our checkpoint fit; the fp32
  logit difference is recorded as a check). Drop path 0 in both.

Timing and memory are benchmarks/_common.py's ``measure``: on CUDA, per-iteration CUDA-event medians and
``max_memory_allocated``, bf16 autocast and channels-last (``--amp-dtype``); on CPU, the median process CPU time
with one torch thread (else wall time) and the resident-set growth during one call.

The official code runs from a LITv2 checkout (``--official-repo``) with tools/litv2_official_parity.py's shims
(its DCN extension -> mmcv's ``deform_conv2d``, apex -> no-op); for training the shim's DCN also gets a backward
(mmcv's, through autograd on a recomputed forward: one extra deformable-conv forward per DTM, three per step) and
casts to fp32 as apex's ``float_function`` does under amp. Without ``--official-repo`` only our rows are measured
and the skipped parts are listed.

    python benchmarks/hilo.py --official-repo /path/to/LITv2 [--sizes 224 1024] [--device cuda]

Writes ``benchmarks/results/<device>/hilo.{json,md}`` (``<device>`` as benchmarks/_common.py names it).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import timm  # noqa: E402

import ops  # noqa: E402
from backbones.litv2 import HiLo  # noqa: E402
from benchmarks import _common as bench  # noqa: E402

DIM, HEADS, WS, ALPHA = 384, 12, 2, 0.9
MODEL, MODEL_SIZE = 'litv2_small', 224


def load_official(repo: Path) -> Any:
    """The official classification module, its DCN shim given a backward and apex's fp32 cast for training."""
    sys.path.insert(0, str(ROOT / 'tools'))
    from litv2_official_parity import official_modules
    cls_module = official_modules(repo)[0]
    dcn = sys.modules['DCN']  # the module object the official DeformConv2dFunction imported
    shim_forward = dcn.deform_conv2d_forward

    def forward(input, weight, bias, offset, *conv_args):
        with torch.autocast(input.device.type, enabled=False):
            return shim_forward(input.float(), weight.float(), bias.float(), offset.float(), *conv_args)

    def backward(input, weight, bias, offset, grad_output, *conv_args):
        with torch.enable_grad(), torch.autocast(input.device.type, enabled=False):
            leaves = [t.detach().float().requires_grad_() for t in (input, offset, weight, bias)]
            out = shim_forward(leaves[0], leaves[2], leaves[3], leaves[1], *conv_args)
            return torch.autograd.grad(out, leaves, grad_output.float())  # input, offset, weight, bias

    dcn.deform_conv2d_forward, dcn.deform_conv2d_backward = forward, backward
    return cls_module


def bench_hilo(args: argparse.Namespace, official_cls: Any) -> list[dict[str, Any]]:
    device = args.device
    torch.manual_seed(0)
    ours = HiLo(DIM, HEADS, WS, ALPHA, qkv_bias=True).to(device)
    window_only = HiLo(DIM, HEADS, WS, 0.0, qkv_bias=True).to(device)
    impls = {'ours (HiLo)': ours, 'ours, window attention only (alpha 0)': window_only}
    contexts = {}
    if device == 'cuda':
        name = 'ours, window attention only, tiled triton kernels'
        impls[name], contexts[name] = window_only, ops.get_backend('na', 'triton').extra['tiled_only']
    if official_cls is not None:
        official = official_cls.HiLo(DIM, HEADS, qkv_bias=True, window_size=WS, alpha=ALPHA)
        official.load_state_dict(ours.state_dict())
        official.to(device)
        impls['official HiLo'] = lambda x: official(x.flatten(1, 2)).view(x.shape)
    rows = []
    for size in args.sizes:
        side = size // 16
        batch = max(1, round(args.batch * (224 / size) ** 2))
        x = torch.randn(batch, side, side, DIM, device=device, requires_grad=True)
        diff = None
        if official_cls is not None:
            with torch.no_grad():
                diff = (impls['official HiLo'](x) - ours(x)).abs().max().item()
        for name, fn in impls.items():
            context = contexts.get(name, contextlib.nullcontext)

            def fwd(fn=fn, x=x, context=context):
                with torch.no_grad(), context():
                    fn(x)

            def fwd_bwd(fn=fn, x=x, context=context):
                with context():
                    fn(x).sum().backward()
            t = {k: bench.measure(f, device, args.iters, args.warmup, False)['ms']
                 for k, f in (('fwd', fwd), ('fwd_bwd', fwd_bwd))}
            rows.append(dict(impl=name, input=size, map=f'{side}x{side}', batch=batch, fwd_ms=round(t['fwd'], 2),
                             fwd_bwd_ms=round(t['fwd_bwd'], 2)))
            if name == 'official HiLo':
                rows[-1]['max_abs_diff_vs_ours'] = diff
            print(rows[-1], flush=True)
    return rows


def bench_model(args: argparse.Namespace, official_cls: Any) -> tuple[list[dict[str, Any]], float | None]:
    """Infer and train rows of our LITv2-S and (with the official code) the official one with the same weights."""
    torch.manual_seed(0)
    ours = timm.create_model(MODEL, drop_path_rate=0.).eval()
    models = {'ours': ours}
    diff = None
    if official_cls is not None:
        sys.path.insert(0, str(ROOT / 'tools'))
        import _parity
        from litv2_official_parity import _official_kwargs, perturb_
        official = official_cls.LITv2(img_size=MODEL_SIZE, **_official_kwargs(_parity.variant_args(MODEL))).eval()
        perturb_(official, torch.Generator().manual_seed(0))
        _parity.load_official_(ours, official.state_dict())
        diff = bench.logit_difference(official, ours, MODEL_SIZE, f'{MODEL} @ {MODEL_SIZE}')
        models['official'] = official
        del official
    del ours
    # each model dropped after its rows: the next model's peak excludes it
    rows = [bench.model_row(models.pop(name), args, args.model_batch, MODEL_SIZE, impl=name, model=MODEL,
                            img_size=MODEL_SIZE) for name in list(models)]
    return rows, diff


def model_ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """ours / official: img/s (> 1: ours faster) and peak MB (< 1: ours smaller), per mode, where both measured."""
    by = {r['impl']: r for r in rows}
    return bench.pair_ratios(by['ours'], by['official']) if 'official' in by else {}


def markdown(result: dict[str, Any]) -> str:
    meta = result['meta']
    lines = bench.intro('LITv2 vs the official code', meta,
                        f"AMP {meta['amp_dtype']}, channels-last {meta['channels_last']}. Random inputs.",
                        'resident-set growth during one iteration, above weights, inputs and optimizer state')
    lines += ['', f"## HiLo at LITv2-S stage-3 shapes (dim {DIM}, {HEADS} heads, window {WS}, alpha {ALPHA})", '',
              '| impl | input | map | batch | fwd ms | fwd+bwd ms | max abs diff vs ours |',
              '|---|---:|---:|---:|---:|---:|---:|']
    for r in result['hilo']:
        diff = f"{r['max_abs_diff_vs_ours']:.1e}" if 'max_abs_diff_vs_ours' in r else ''
        lines.append(f"| {r['impl']} | {r['input']} | {r['map']} | {r['batch']} | {r['fwd_ms']} | "
                     f"{r['fwd_bwd_ms']} | {diff} |")
    lines += bench.model_table(f'{MODEL} at {MODEL_SIZE}: inference and training (forward + backward + AdamW step)',
                               result['models'], {'impl': 'impl', 'params (M)': 'params_m'})
    rat = result['model_ratios']
    if rat:
        lines += ['', 'Ours / official (img/s > 1: ours faster; memory < 1: ours smaller): ' + ', '.join(
            f'{k} {v:.2f}' for k, v in rat.items()) + '.',
            '', f"Same weights: max abs fp32 logit difference {result['model_max_abs_diff']:.1e} (2 random images)."]
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--official-repo', '--official', type=Path, help='checkout of github.com/ziplab/LITv2')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 1024], help='HiLo input sizes')
    parser.add_argument('--batch', type=int, default=8, help='HiLo batch at 224 (scaled by (224 / size)^2, >= 1)')
    parser.add_argument('--model-batch', type=int, help=f'{MODEL} batch (default: 128 on CUDA, 4 on CPU; '
                        'halved on CUDA out-of-memory)')
    bench.add_run_args(parser, iters=5)
    args = parser.parse_args()
    on_gpu = bench.prepare_run(args)
    skipped = []
    if args.official_repo is None:
        skipped = ['official HiLo and official LITv2-S rows and ratios (no --official-repo)']
        print('skipping ' + skipped[0], flush=True)
    elif not on_gpu and not args.cpu_memory:
        skipped = ['CPU peak memory (no /proc/self/clear_refs)']
    meta = bench.run_meta(args, channels_last=args.channels_last, skipped=skipped,
                          dcn_official='mmcv deform_conv2d (shim; backward through a recomputed forward)',
                          dcn_ours='torchvision deform_conv2d')
    official_cls = load_official(args.official_repo) if args.official_repo else None
    hilo = bench_hilo(args, official_cls)
    models, diff = bench_model(args, official_cls)
    meta['loadavg_after'] = bench.loadavg()
    result = dict(meta=meta, hilo=hilo, models=models, model_ratios=model_ratios(models), model_max_abs_diff=diff)
    bench.write_results('hilo', result, markdown(result), args.device)


if __name__ == '__main__':
    main()
