"""Benchmark Agent and InLine attention against the official code and Swin's window attention, and the Swin-T models.

* Attention at Swin-T's stage-1 / stage-2 shapes (dim 96 / 192, 3 / 6 heads, 9 / 16 agents) of a 224 and a
  1024 x 1024 input (maps 56 / 28 and 256 / 128): our ``AgentAttention`` and ``InLineAttention``
  (:mod:`backbones._agent_inline`, built for the map), the official modules with the same weights, and Swin's 7x7
  window attention (``ops.WindowAttention2D``, the attention they replace); forward and forward+backward time and
  peak memory.
* Whole models at 224: agent_swin_tiny and inline_swin_tiny, ours vs the official models holding the same weights
  (official random init, perturbed as tools/agent_inline_official_parity.py does), and timm's
  ``swin_tiny_patch4_window7_224``; inference and training img/s (forward, cross-entropy, backward, AdamW step) with
  peak memory.

Timing and memory are benchmarks/_common.py's ``measure``: on CUDA, CUDA-event medians and ``max_memory_allocated``
(bf16 autocast for the model rows); on CPU, the median process CPU time with one torch thread and the resident-set
growth during one call. The official code runs from checkouts given by ``--agent-repo`` / ``--inline-repo``; without
them only our rows and timm's are measured.

    python benchmarks/agent_inline.py --agent-repo /path/to/Agent-Attention --inline-repo /path/to/InLine \\
        [--sizes 224 1024] [--device cuda]

Writes ``benchmarks/results/<device>/agent_inline.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tools'))

import timm  # noqa: E402
from _parity import load_official_, variant_args  # noqa: E402
from agent_inline_official_parity import official_model, official_module, perturb_  # noqa: E402

import ops  # noqa: E402
from backbones._agent_inline import AgentAttention, InLineAttention  # noqa: E402
from benchmarks import _common as bench  # noqa: E402

STAGES = {1: dict(dim=96, heads=3, agents=9, stride=4), 2: dict(dim=192, heads=6, agents=16, stride=8)}
MODELS = ('agent_swin_tiny', 'inline_swin_tiny', 'swin_tiny_patch4_window7_224')
_FILES = dict(agent='agent_transformer/models/agent_swin.py', inline='models/inline_swin.py')


def attention_impls(stage: dict, side: int, repos: dict[str, Path], device: torch.device) -> dict[str, Any]:
    """name -> callable on an NHWC map; official modules carry our weights and see the windows' token layout."""
    torch.manual_seed(0)
    dim, heads = stage['dim'], stage['heads']
    ag = AgentAttention(dim, heads, stage['agents'], side).to(device)
    il = InLineAttention(dim, heads).to(device)
    win = ops.WindowAttention2D(dim, heads, 7).to(device)
    impls = {'ours agent': ag, 'ours InLine': il, 'Swin window 7x7 (ops.WindowAttention2D)': win}
    if 'agent' in repos:
        off = official_module(repos['agent'] / _FILES['agent']).AgentAttention(
            dim, (side, side), heads, agent_num=stage['agents'])
        off.load_state_dict(ag.state_dict())
        off.to(device)
        impls['official agent'] = lambda x, m=off: m(x.flatten(1, 2)).view(x.shape)
    if 'inline' in repos:
        off = official_module(repos['inline'] / _FILES['inline']).InLineAttention(dim, (side, side), heads)
        off.load_state_dict(il.state_dict())
        off.to(device)
        impls['official InLine'] = lambda x, m=off: m(x.flatten(1, 2)).view(x.shape)
    return impls


def bench_attention(args: argparse.Namespace, repos: dict[str, Path]) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        for s, stage in STAGES.items():
            side = size // stage['stride']
            batch = max(1, round(args.batch * (224 / size) ** 2))
            impls = attention_impls(stage, side, repos, args.device)
            x = torch.randn(batch, side, side, stage['dim'], device=args.device, requires_grad=True)
            with torch.no_grad():
                ref = {k: impls[k](x) for k in ('ours agent', 'ours InLine')}
            for name, fn in impls.items():
                def fwd(fn=fn, x=x):
                    with torch.no_grad():
                        fn(x)

                def fwd_bwd(fn=fn, x=x):
                    fn(x).sum().backward()
                t = {k: bench.measure(f, args.device, args.iters, args.warmup, args.cpu_memory)
                     for k, f in (('fwd', fwd), ('fwd_bwd', fwd_bwd))}
                row = dict(impl=name, input=size, stage=s, map=f'{side}x{side}', batch=batch,
                           fwd_ms=round(t['fwd']['ms'], 2), fwd_bwd_ms=round(t['fwd_bwd']['ms'], 2),
                           fwd_bwd_mb=round(t['fwd_bwd']['peak_mb'], 1))
                if name.startswith('official'):
                    with torch.no_grad():
                        ours = ref['ours agent' if 'agent' in name else 'ours InLine']
                        row['max_abs_diff_vs_ours'] = (fn(x) - ours).abs().max().item()
                rows.append(row)
                print(row, flush=True)
    return rows


def bench_models(args: argparse.Namespace, repos: dict[str, Path]) -> list[dict[str, Any]]:
    rows = []
    for name in MODELS:
        torch.manual_seed(0)
        family = 'agent' if name.startswith('agent') else 'inline' if name.startswith('inline') else None
        candidates = {'ours' if family else 'timm': timm.create_model(name, drop_path_rate=0.).eval()}
        if family in repos:
            cfg = variant_args(name)
            off = official_model(official_module(repos[family] / _FILES[family]), family, cfg.pop('skeleton'), cfg)
            perturb_(off, torch.Generator().manual_seed(0))
            load_official_(candidates['ours'], off.state_dict())
            candidates['official'] = off
        rows += [bench.model_row(candidates.pop(impl), args, args.model_batch, 224, channels_last=False, impl=impl,
                                 model=name, img_size=224) for impl in list(candidates)]
    return rows


def markdown(result: dict[str, Any]) -> str:
    meta = result['meta']
    lines = bench.intro("Agent / InLine attention vs the official code and Swin's window attention", meta,
                        f"Model rows: AMP {meta['amp_dtype']}. Random inputs.", 'resident-set growth during one call')
    lines += ['', "## Attention at Swin-T's stage-1 / stage-2 shapes (96 / 192 channels, 3 / 6 heads, 9 / 16 agents)",
              '', '| impl | input | stage | map | batch | fwd ms | fwd+bwd ms | fwd+bwd MB | max abs diff vs ours |',
              '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in result['attention']:
        diff = f"{r['max_abs_diff_vs_ours']:.1e}" if 'max_abs_diff_vs_ours' in r else ''
        lines.append(f"| {r['impl']} | {r['input']} | {r['stage']} | {r['map']} | {r['batch']} | {r['fwd_ms']} | "
                     f"{r['fwd_bwd_ms']} | {r['fwd_bwd_mb']} | {diff} |")
    lines += bench.model_table('Whole models at 224: inference and training (forward + backward + AdamW step)',
                               result['models'], {'model': 'model', 'impl': 'impl', 'params (M)': 'params_m'})
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--agent-repo', type=Path, help='checkout of github.com/LeapLabTHU/Agent-Attention')
    parser.add_argument('--inline-repo', type=Path, help='checkout of github.com/LeapLabTHU/InLine')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 1024], help='input sizes of the attention rows')
    parser.add_argument('--batch', type=int, default=4, help='attention batch at 224 (scaled by (224 / size)^2)')
    parser.add_argument('--model-batch', type=int, help='model batch (default: 128 on CUDA, 4 on CPU)')
    bench.add_run_args(parser)
    args = parser.parse_args()
    on_gpu = bench.prepare_run(args)
    repos = {k: v for k, v in (('agent', args.agent_repo), ('inline', args.inline_repo)) if v is not None}
    skipped = [f'official {k} rows (no --{k}-repo)' for k in ('agent', 'inline') if k not in repos]
    if not on_gpu and not args.cpu_memory:
        skipped.append('CPU peak memory (no /proc/self/clear_refs)')
    meta = bench.run_meta(args, skipped=skipped)
    attention = bench_attention(args, repos)
    models = bench_models(args, repos)
    meta['loadavg_after'] = bench.loadavg()
    result = dict(meta=meta, attention=attention, models=models)
    bench.write_results('agent_inline', result, markdown(result), args.device)


if __name__ == '__main__':
    main()
