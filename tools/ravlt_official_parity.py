"""Run the official RAVLT code next to ours: write the CI parity fixture, or check a full-size variant.

The official code (https://github.com/qhfan/RALA, ``classfication/RALA.py``) is imported from a checkout given by
``--official``. Stand-ins, here only: ``einops.rearrange`` (the two patterns RALA.py uses, written out with
reshape / permute) when einops is not installed, and ``fvcore`` (imported but unused) when fvcore is not.

Usage (from the attnzoo root)::

    git clone https://github.com/qhfan/RALA /tmp/RALA
    PYTHONPATH=. python tools/ravlt_official_parity.py --official /tmp/RALA --write tests/data/ravlt_official.pt
    PYTHONPATH=. python tools/ravlt_official_parity.py --official /tmp/RALA --check ravlt_tiny

``--write`` builds a reduced official model (``FIXTURE_CFG``) with perturbed random weights (every parameter and
BatchNorm statistic moved off its init), runs it at ``FIXTURE_SIZES`` (one of them odd and non-square: the
official model forwards at any size, rebuilding its RoPE tables), and saves its official-layout state dict
(fp16 values, run in fp32) with the logits. ``tests/test_ravlt.py`` loads it through ``backbones.checkpoint.fit`` and
compares. ``--check`` does the same for a real variant at 224 and 256 in fp32 and fp64, printing the largest
differences.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import _parity
import torch
from _parity import SEED, fixture_input, perturb_running_stats_

FIXTURE_CFG = dict(embed_dims=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), mlp_ratio=2.,
                   projection=32, num_classes=10, layer_scale_init_values=(1., 1., 1e-6, 1e-6))
FIXTURE_SIZES = ((64, 64), (50, 71))


def _rearrange(x: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """The two einops patterns of RALA.py."""
    if pattern == 'b (m n d) h w -> m b n (h w) d':
        b, c, h, w = x.shape
        m, n = sizes['m'], sizes['n']
        return x.reshape(b, m, n, c // (m * n), h * w).permute(1, 0, 2, 4, 3)
    if pattern == 'b n (h w) d -> b (n d) h w':
        b, n, _, d = x.shape
        return x.permute(0, 1, 3, 2).reshape(b, n * d, sizes['h'], sizes['w'])
    raise NotImplementedError(pattern)


def _shims() -> None:
    try:
        import einops  # noqa: F401
    except ImportError:
        einops = types.ModuleType('einops')
        einops.rearrange = _rearrange
        layers, layers_torch = types.ModuleType('einops.layers'), types.ModuleType('einops.layers.torch')
        layers_torch.Rearrange = None  # imported, never used by RALA.py
        sys.modules.update({'einops': einops, 'einops.layers': layers, 'einops.layers.torch': layers_torch})
    try:
        import fvcore.nn  # noqa: F401
    except ImportError:
        fv, fvnn = types.ModuleType('fvcore'), types.ModuleType('fvcore.nn')
        fvnn.FlopCountAnalysis = fvnn.flop_count_table = None  # imported, never used
        sys.modules.update({'fvcore': fv, 'fvcore.nn': fvnn})


def official_module(root: Path) -> types.ModuleType:
    _shims()
    return _parity.load_module('official_rala', root / 'classfication' / 'RALA.py')


def official_model(module: types.ModuleType, cfg: dict, num_classes: int = 1000) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return module.RAVLT(
        num_classes=num_classes, embed_dims=list(cfg['embed_dims']), depths=list(cfg['depths']),
        num_heads=list(cfg['num_heads']), mlp_ratios=[cfg.get('mlp_ratio', 3.5)] * 4, drop_path_rate=0.,
        projection=cfg.get('projection', 1024), layerscales=[True] * 4,
        layer_init_values=list(cfg['layer_scale_init_values'])).eval()


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter and BatchNorm statistic off its init so each path of the model shows in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('weight') and p.ndim == 1 or 'gamma' in name:  # norms, layer-scales
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    perturb_running_stats_(model, gen)


def write_fixture(root: Path, out: Path) -> None:
    official = official_model(official_module(root), FIXTURE_CFG, FIXTURE_CFG['num_classes'])
    perturb_(official, torch.Generator().manual_seed(SEED))
    state = _parity.fp16_state_(official)
    assert 'layers.0.RoPE.angle' in state  # the persistent buffer of the official state dict
    with torch.no_grad():
        logits = {size: official(fixture_input(*size)) for size in FIXTURE_SIZES}
    torch.save(dict(cfg=FIXTURE_CFG, state_dict=state, logits=logits), out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.1f} KiB); logits {[tuple(v.shape) for v in logits.values()]}')


def check_variant(root: Path, variant: str, sizes=(224, 256)) -> None:
    ours = _parity.ours(variant)
    official = official_model(official_module(root), _parity.variant_args(variant))
    perturb_(official, torch.Generator().manual_seed(SEED))
    _parity.load_official_(ours, official.state_dict())
    _parity.compare(variant, official, ours, sizes)


if __name__ == '__main__':
    _parity.main(_parity.parser(__doc__, dict(official='github.com/qhfan/RALA'),
                                'compare a full-size variant (e.g. ravlt_tiny) at 224 and 256'),
                 ['official'], write_fixture, check_variant)
