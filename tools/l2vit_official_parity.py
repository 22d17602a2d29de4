"""Run the official L2ViT code next to ours: write the CI parity fixture, or check a full-size variant.

The official code (https://github.com/ChuanyangZheng/L2ViT, ``classification/models/l2vit.py``) is imported from a
checkout given by ``--official``; it runs unchanged on the installed timm (its ``timm.models.layers`` /
``timm.models.registry`` imports still resolve), so no stand-ins are needed.

Usage (from the attnzoo root)::

    git clone https://github.com/ChuanyangZheng/L2ViT /tmp/L2ViT
    PYTHONPATH=. python tools/l2vit_official_parity.py --official /tmp/L2ViT --write tests/data/l2vit_official.pt
    PYTHONPATH=. python tools/l2vit_official_parity.py --official /tmp/L2ViT --check l2vit_tiny

``--write`` builds a reduced official model (``FIXTURE_CFG``: two blocks per stage, so every stage has an LWA and
an LGA block) with perturbed random weights, runs it at ``FIXTURE_SIZES`` (the second odd and non-square: the
stem and merges pad, and every LWA map is padded to the window) and saves its official-layout state dict (fp16
values, run in fp32) with the logits; ``tests/test_l2vit.py`` loads it through ``backbones.checkpoint.fit`` and
compares. ``--check`` does the same for a real variant at 224 and 200x232 (not a multiple of 7 at any stage) in
fp32 and fp64, printing the largest differences.

The LGA ``qkv`` weights are drawn larger than the rest (``LGA_QKV_STD``) so that the linear attention's
denominators straddle the official clamp at 100: both branches of ``max(q . sum(k), 100)`` are exercised (the
share of clamped entries is printed).
"""
from __future__ import annotations

import types
from pathlib import Path

import _parity
import torch
from _parity import SEED, fixture_input, perturb_running_stats_

FIXTURE_CFG = dict(embed_dims=(8, 16, 16, 32), depths=(2, 2, 2, 2), num_heads=(2, 2, 2, 4), num_classes=10)
FIXTURE_SIZES = ((56, 56), (50, 71))
CHECK_SIZES = ((224, 224), (200, 232))
LGA_QKV_STD = 0.8


def official_module(root: Path) -> types.ModuleType:
    return _parity.load_module('official_l2vit', root / 'classification' / 'models' / 'l2vit.py')


def official_model(module: types.ModuleType, cfg: dict, num_classes: int = 1000) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return module.L2ViT(
        num_classes=num_classes, dims=list(cfg['embed_dims']), depths=list(cfg['depths']),
        num_heads=list(cfg['num_heads']), window_size=cfg.get('window_size', 7), drop_path_rate=0.,
        block_type='mix_local_enhanced_vit', conv_stem=True).eval()


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter and BatchNorm statistic off its init so each path of the model shows in the output."""
    lga_qkv = {f'{name}.qkv.weight' for name, m in model.named_modules() if hasattr(m, 'temperature')}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in lga_qkv:
                p.copy_(torch.randn(p.shape, generator=gen) * LGA_QKV_STD)
            elif name.endswith('weight') and p.ndim == 1:  # norms
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith('temperature'):
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    perturb_running_stats_(model, gen)


def clamped_share(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The share of LGA denominator entries ``q . sum(k)`` that the clamp at 100 raises, over the whole forward."""
    counts = [0, 0]

    def hook(m, inputs, _):
        (t,) = inputs
        B, N, C = t.shape
        q, k, _v = m.qkv(t).reshape(B, N, 3, m.num_heads, C // m.num_heads).permute(2, 0, 3, 1, 4).relu()
        den = q @ k.sum(2, keepdim=True).transpose(-2, -1)
        counts[0] += int((den < 100).sum())
        counts[1] += den.numel()
    handles = [m.register_forward_hook(hook) for m in model.modules() if hasattr(m, 'temperature')]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return counts[0] / max(counts[1], 1)


def write_fixture(root: Path, out: Path) -> None:
    official = official_model(official_module(root), FIXTURE_CFG, FIXTURE_CFG['num_classes'])
    perturb_(official, torch.Generator().manual_seed(SEED))
    state = _parity.fp16_state_(official)
    assert 'downsample_layers.0.proj.proj.0.weight' in state and 'stages.0.1.attn.temperature' in state
    with torch.no_grad():
        logits = {size: official(fixture_input(*size)) for size in FIXTURE_SIZES}
    for size in FIXTURE_SIZES:
        print(f'{size}: clamped denominators {clamped_share(official, fixture_input(*size)):.0%}')
    torch.save(dict(cfg=FIXTURE_CFG, state_dict=state, logits=logits), out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.1f} KiB); logits {[tuple(v.shape) for v in logits.values()]}')


def _clamped_note(official: torch.nn.Module, x: torch.Tensor) -> str:
    return f', clamped denominators {clamped_share(official, x):.0%}' if x.dtype == torch.float32 else ''


def check_variant(root: Path, variant: str, sizes=CHECK_SIZES) -> None:
    ours = _parity.ours(variant)
    official = official_model(official_module(root), _parity.variant_args(variant))
    perturb_(official, torch.Generator().manual_seed(SEED))
    _parity.load_official_(ours, official.state_dict())
    _parity.compare(variant, official, ours, sizes, note=_clamped_note)


if __name__ == '__main__':
    _parity.main(_parity.parser(__doc__, dict(official='github.com/ChuanyangZheng/L2ViT'),
                                'compare a full-size variant (e.g. l2vit_tiny) at 224 and 200x232'),
                 ['official'], write_fixture, check_variant)
