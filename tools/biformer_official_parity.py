"""Run the official BiFormer code next to ours: write the CI parity fixture, or check a full-size variant.

The official code (https://github.com/rayleizhu/BiFormer) is run outside the package, from a checkout given by
``--official``; its ``models/biformer.py``, ``models/biformer_stl.py`` and ``ops/bra_legacy.py`` are imported as
they are. It needs ``einops`` (``pip install -e '.[parity]'``: the official attention is written with it). Shims,
here only:

* ``fairscale.nn.checkpoint``: a module whose ``checkpoint_wrapper`` returns the module unchanged (the official code
  imports it for gradient checkpointing only);
* the official ``ops`` folder shares its name with our ``ops`` package: ``ops/bra_legacy.py`` is loaded from its
  file under the module name ``ops.bra_legacy``, which is what ``models/biformer.py`` imports; the official
  ``models`` folder (no ``__init__.py``) is bound to the name ``models`` explicitly.

Usage (from the attnzoo root)::

    git clone https://github.com/rayleizhu/BiFormer /tmp/BiFormer
    PYTHONPATH=. python tools/biformer_official_parity.py --official /tmp/BiFormer \
        --write tests/data/biformer_official.pt
    PYTHONPATH=. python tools/biformer_official_parity.py --official /tmp/BiFormer --check biformer_small

``--write`` builds two reduced official models with perturbed random weights (every parameter and BatchNorm
statistic moved off its init): ``biformer`` is the BiFormer design (conv stem, CPE, BRA stages with topk 1/4/16,
global attention + LePE stage 4) with ``auto_pad=True``, ``stl`` the BiFormer-STL design (patch stem, BN + 2x2
merging, no CPE), whose BRA modules get ``auto_pad`` switched on for the size that does not divide. It runs both in
eval mode at 224x224 (nothing padded) and 200x232 (stage maps 50x58, 25x29, 13x15: padded to multiples of 7 in
stages 1-3) and saves their official-layout state dicts (fp16 values, run in fp32) with the logits;
``tests/test_biformer.py`` loads them through ``backbones.checkpoint.fit`` and compares. ``--check`` compares a real
variant (random perturbed weights) at 224 and, with auto_pad, at 200x232, in fp32 and fp64, and prints the largest
differences.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import _parity
import torch
from _parity import SEED, fixture_input, perturb_running_stats_

FIXTURE_SIZES = ((224, 224), (200, 232))
_BIFORMER = dict(n_win=7, kv_downsample_mode='identity', kv_per_wins=[-1, -1, -1, -1], topks=[1, 4, 16, -2],
                 side_dwconv=5, before_attn_dwconv=3, layer_scale_init_value=-1, param_routing=False,
                 diff_routing=False, soft_routing=False, pre_norm=True, pe=None)
# reduced official configurations (the official BiFormer / BiFormerSTL keyword arguments)
FIXTURE_CFGS = dict(
    biformer=dict(_BIFORMER, depth=[1, 1, 2, 1], embed_dim=[8, 16, 24, 32], qk_dims=[8, 16, 24, 32],
                  mlp_ratios=[3, 3, 3, 3], head_dim=4, auto_pad=True, num_classes=10),
    stl=dict(depth=[1, 1, 1, 1], embed_dim=[8, 16, 24, 32], mlp_ratios=[4, 4, 4, 4], head_dim=4,
             n_wins=(7, 7, 7, 7), topks=(1, 4, 16, -2), side_dwconv=5, num_classes=10),
)


def official_modules(root: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The official ``models.biformer`` and ``models.biformer_stl`` modules."""
    ckpt = types.ModuleType('fairscale.nn.checkpoint')
    ckpt.checkpoint_wrapper = lambda m, *a, **k: m
    sys.modules.update({'fairscale': types.ModuleType('fairscale'), 'fairscale.nn': types.ModuleType('fairscale.nn'),
                        'fairscale.nn.checkpoint': ckpt})
    _parity.load_module('ops.bra_legacy', root / 'ops' / 'bra_legacy.py')
    # the official `models` folder has no __init__.py: bind the name to it explicitly, so that no other `models`
    # module on the path shadows the namespace package
    if getattr(sys.modules.get('models'), '__path__', None) != [str(root / 'models')]:
        package = types.ModuleType('models')
        package.__path__ = [str(root / 'models')]
        sys.modules['models'] = package
    torch.manual_seed(SEED)  # the official inits draw from the global generator: reproducible fixtures
    with _parity.official_code():
        return importlib.import_module('models.biformer'), importlib.import_module('models.biformer_stl')


def enable_auto_pad_(model: torch.nn.Module) -> None:
    """Switch on the official ``auto_pad`` in every BRA module (BiFormer-STL's constructor does not expose it)."""
    for m in model.modules():
        if type(m).__name__ == 'BiLevelRoutingAttention':
            m.auto_pad = True


def build_official(root: Path, key: str) -> torch.nn.Module:
    biformer, biformer_stl = official_modules(root)
    cfg = FIXTURE_CFGS[key]
    if key == 'stl':
        model = biformer_stl.BiFormerSTL(norm_layer=torch.nn.BatchNorm2d, **cfg)
        enable_auto_pad_(model)
        return model
    return biformer.BiFormer(**cfg)


def our_kwargs(key: str) -> dict:
    """The same configuration as ``backbones.biformer.BiFormer`` arguments."""
    cfg = FIXTURE_CFGS[key]
    common = dict(depths=tuple(cfg['depth']), embed_dims=tuple(cfg['embed_dim']), mlp_ratios=tuple(cfg['mlp_ratios']),
                  head_dim=cfg['head_dim'], topks=tuple(cfg['topks']), side_dwconv=cfg['side_dwconv'],
                  num_classes=cfg['num_classes'])
    if key == 'stl':
        return dict(common, n_win=cfg['n_wins'][0], cpe_ks=0, swin_layout=True)
    return dict(common, qk_dims=tuple(cfg['qk_dims']), n_win=cfg['n_win'], cpe_ks=cfg['before_attn_dwconv'])


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter and BatchNorm statistic off its init so each path of the model shows in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.attn.qkv.' in name and name.endswith('weight'):  # sharp attention: the scale and routing show
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[1] ** -0.5)
            elif name.endswith('weight') and p.ndim == 1:  # norms
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith('bias'):  # biases matter: padded tokens carry the qkv bias
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    perturb_running_stats_(model, gen)


def write_fixture(root: Path, out: Path) -> None:
    fixture = {}
    for key in FIXTURE_CFGS:
        official = build_official(root, key).eval()
        perturb_(official, torch.Generator().manual_seed(SEED))
        state = _parity.fp16_state_(official)
        with torch.no_grad():
            logits = {size: official(fixture_input(*size)) for size in FIXTURE_SIZES}
        fixture[key] = dict(cfg=our_kwargs(key), state_dict=state, logits=logits)
    torch.save(fixture, out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.1f} KiB)')


def check_variant(root: Path, variant: str, sizes=((224, 224), (200, 232))) -> None:
    biformer, biformer_stl = official_modules(root)
    official = getattr(biformer_stl if variant == 'biformer_stl' else biformer, variant)().eval()
    enable_auto_pad_(official)  # a no-op at 224; the official detection/segmentation setting elsewhere
    perturb_(official, torch.Generator().manual_seed(SEED))
    ours = _parity.load_official_(_parity.ours(variant), official.state_dict())
    _parity.compare(variant, official, ours, sizes)


if __name__ == '__main__':
    _parity.main(_parity.parser(__doc__, dict(official='github.com/rayleizhu/BiFormer'),
                                'compare a full-size variant (e.g. biformer_small) at 224 and 200x232'),
                 ['official'], write_fixture, check_variant)
