"""Run the official GLNet code next to ours: write the CI parity fixture, or check a full-size variant.

The official code (https://github.com/rayleizhu/GLMix) is run outside the package, from a checkout given by
``--official``; its ``models/glnet.py`` and ``models/glnet_tklb.py`` are imported as they are. It needs fairscale for
``checkpoint_wrapper`` (used only for gradient checkpointing); this script stands in for it, here only, with a
``fairscale.nn.checkpoint`` module whose ``checkpoint_wrapper`` returns the module unchanged.

Usage (from the attnzoo root)::

    git clone https://github.com/rayleizhu/GLMix /tmp/GLMix
    PYTHONPATH=. python tools/glnet_official_parity.py --official /tmp/GLMix --write tests/data/glnet_official.pt
    PYTHONPATH=. python tools/glnet_official_parity.py --official /tmp/GLMix --check glnet_4g

``--write`` builds two reduced official models with perturbed random weights (every parameter and BatchNorm
statistic moved off its init; LayerScale and slot scales made large enough to matter): ``g`` is the 4G/9G/16G
design (overlapped stem, CPE, residual-dw MLP, alternating GLMix / MHSA stage 3, LayerScale, token-labelling head),
``stl`` the STL design (patch stem, BN-first transitions, learnable slots, NLC MHSA stage 4). It runs both in eval
mode at 64x64 and 72x96 and saves their official-layout state dicts (fp16 values, run in fp32) with the logits;
``tests/test_glnet.py`` loads them through ``backbones.checkpoint.fit`` and compares. ``--check`` compares a real
variant at 224 and 256 and prints the largest differences.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import _parity
import torch
from _parity import SEED, fixture_input, perturb_running_stats_

FIXTURE_SIZES = ((64, 64), (72, 96))
# reduced official configurations (the official GLNet / GLNet_tklb keyword arguments)
FIXTURE_CFGS = dict(
    g=dict(tklb=True, depth=[1, 1, 2, 1], embed_dim=[8, 16, 24, 32], mlp_ratios=[3, 3, 3, 3], head_dim=8,
           mixing_modes=('glmix', 'glmix', 'glmix.mha_nchw', 'mha_nchw'), local_dw_ks=5, slot_init='ada_avgpool',
           num_slots=16, cpe_ks=3, downsample_style='ovlp', transition_layout='proj.norm', mlp_dw=True,
           layerscale=1e-4, num_classes=10),
    stl=dict(tklb=False, depth=[1, 1, 1, 1], embed_dim=[8, 16, 24, 32], mlp_ratios=[4, 4, 4, 4], head_dim=8,
             mixing_modes=('glmix', 'glmix', 'glmix', 'mha'), local_dw_ks=5, slot_init='param', num_slots=64,
             transition_layout='norm.proj', num_classes=10),
)


def official_modules(root: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The official ``models.glnet`` and ``models.glnet_tklb`` modules."""
    ckpt = types.ModuleType('fairscale.nn.checkpoint')
    ckpt.checkpoint_wrapper = lambda m, *a, **k: m
    sys.modules.update({'fairscale': types.ModuleType('fairscale'), 'fairscale.nn': types.ModuleType('fairscale.nn'),
                        'fairscale.nn.checkpoint': ckpt})
    torch.manual_seed(SEED)  # the official inits draw from the global generator: reproducible fixtures
    with _parity.official_code(root):
        return importlib.import_module('models.glnet'), importlib.import_module('models.glnet_tklb')


def build_official(root: Path, cfg: dict) -> torch.nn.Module:
    glnet, glnet_tklb = official_modules(root)
    kwargs = {k: v for k, v in cfg.items() if k != 'tklb'}
    cls = glnet_tklb.GLNet_tklb if cfg['tklb'] else glnet.GLNet
    return cls(norm_layer=torch.nn.BatchNorm2d, **kwargs)


def our_kwargs(cfg: dict) -> dict:
    """The same configuration as ``backbones.glnet.GLNet`` arguments."""
    return dict(depths=tuple(cfg['depth']), embed_dims=tuple(cfg['embed_dim']), mlp_ratios=tuple(cfg['mlp_ratios']),
                head_dim=cfg['head_dim'], mixing_modes=tuple(cfg['mixing_modes']), local_dw_ks=cfg['local_dw_ks'],
                slot_init=cfg['slot_init'], num_slots=cfg['num_slots'], cpe_ks=cfg.get('cpe_ks', 0),
                mlp_dw=cfg.get('mlp_dw', False), overlapped_stem=cfg.get('downsample_style') == 'ovlp',
                norm_first_transition=cfg['transition_layout'] == 'norm.proj', layerscale=cfg.get('layerscale', -1.),
                token_label_head=cfg['tklb'], num_classes=cfg['num_classes'])


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter and BatchNorm statistic off its init so each path of the model shows in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('slot_scale'):  # sharp clustering / dispatch instead of near-uniform weights
                p.fill_(4. + torch.rand((), generator=gen).item())
            elif name.endswith('gamma'):  # LayerScale 1e-4 would hide the residual branches
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith('weight') and p.ndim == 1:  # norms
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    perturb_running_stats_(model, gen)


def write_fixture(root: Path, out: Path) -> None:
    fixture = {}
    for key, cfg in FIXTURE_CFGS.items():
        official = build_official(root, cfg).eval()
        perturb_(official, torch.Generator().manual_seed(SEED))
        state = _parity.fp16_state_(official)
        with torch.no_grad():
            logits = {size: official(fixture_input(*size)) for size in FIXTURE_SIZES}
        fixture[key] = dict(cfg=our_kwargs(cfg), state_dict=state, logits=logits)
    torch.save(fixture, out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.1f} KiB)')


def check_variant(root: Path, variant: str, sizes=(224, 256)) -> None:
    glnet, glnet_tklb = official_modules(root)
    module = glnet_tklb if variant.endswith('_tklb') else glnet
    official = getattr(module, variant)().eval()
    perturb_(official, torch.Generator().manual_seed(SEED))
    ours = _parity.load_official_(_parity.ours(variant), official.state_dict())
    _parity.compare(variant, official, ours, sizes)


if __name__ == '__main__':
    _parity.main(_parity.parser(__doc__, dict(official='github.com/rayleizhu/GLMix'),
                                'compare a full-size variant (e.g. glnet_4g) at 224 and 256'),
                 ['official'], write_fixture, check_variant)
