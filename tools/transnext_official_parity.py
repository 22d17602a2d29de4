"""Run the official TransNeXt code next to ours: write the CI parity fixture, or check a full-size variant.

The official code (https://github.com/DaiShiResearch/TransNeXt) is run outside the package, from a checkout given by
``--official``; its ``classification/transnext.py`` is imported as it is, with the PyTorch-native aggregated
attention (``attention_native.py``: the script makes sure the ``swattention`` CUDA extension is not picked up). The
official model fixes its tables to the ``img_size`` it is built for, so it is rebuilt for every size with the same
parameters (``pretrain_size`` kept); ours is built once.

Usage (from the attnzoo root)::

    git clone https://github.com/DaiShiResearch/TransNeXt /tmp/TransNeXt
    PYTHONPATH=. python tools/transnext_official_parity.py --official /tmp/TransNeXt \\
        --write tests/data/transnext_official.pt
    PYTHONPATH=. python tools/transnext_official_parity.py --official /tmp/TransNeXt --check transnext_micro

``--write`` builds two reduced official models with perturbed random weights (every parameter moved off its init;
the small-init local biases, learnable tokens and query embeddings made large enough to matter): ``micro`` is the
TransNeXt design (aggregated attention in stages 1-3, full attention in stage 4), ``aaaa`` the all-aggregated one
(sr 16/8/4/2). Each runs in eval mode at 64x64 (built for 64, ``pretrain_size`` 64) and at 96x96 (rebuilt for 96,
``pretrain_size`` 64: extrapolated coordinates); the official-layout state dicts (fp16 values, run in fp32) and the
logits are saved; ``tests/test_transnext.py`` loads them through ``backbones.checkpoint.fit`` and compares. ``--check``
compares a real variant at its size and at ``--sizes`` (default 256; official rebuilt, ``pretrain_size`` as ours).
"""
from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path

import _parity
import torch
from _parity import SEED, fixture_input

FIXTURE_SIZES = (64, 96)
FIXTURE_PRETRAIN = 64
# reduced official configurations (official TransNeXt keyword arguments)
FIXTURE_CFGS = dict(
    micro=dict(window_size=[3, 3, 3, None], embed_dims=[8, 16, 24, 32], num_heads=[2, 2, 2, 4],
               mlp_ratios=[8, 8, 4, 4], depths=[1, 1, 2, 1], sr_ratios=[8, 4, 2, 1]),
    aaaa=dict(window_size=[3, 3, 3, 3], embed_dims=[8, 16, 24, 32], num_heads=[2, 2, 2, 4],
              mlp_ratios=[8, 8, 4, 4], depths=[1, 1, 1, 1], sr_ratios=[16, 8, 4, 2]),
)
# the official entrypoints' arguments (classification/transnext.py) for --check
OFFICIAL_VARIANTS = dict(
    transnext_micro=('transnext_micro', 224, 224),
    transnext_tiny=('transnext_tiny', 224, 224),
    transnext_small=('transnext_small', 224, 224),
    transnext_base=('transnext_base', 224, 224),
    transnext_small_384=('transnext_small', 384, 224),
    transnext_base_384=('transnext_base', 384, 224),
    transnext_micro_aaaa_256=('transnext_micro_AAAA', 256, 256),
)


def official_module(root: Path):
    """The official ``classification/transnext.py`` module on its native attention."""
    import pkg_resources
    real = pkg_resources.get_distribution

    def no_swattention(name, *a, **k):
        if name == 'swattention':
            raise pkg_resources.DistributionNotFound(name)
        return real(name, *a, **k)

    pkg_resources.get_distribution = no_swattention
    try:
        with _parity.official_code(root / 'classification'):
            return importlib.import_module('transnext')
    finally:
        pkg_resources.get_distribution = real


def build_official(mod, cfg: dict, img_size: int, pretrain_size: int, num_classes: int = 10) -> torch.nn.Module:
    return mod.TransNeXt(img_size=img_size, pretrain_size=pretrain_size, patch_size=4, qkv_bias=True,
                         norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=num_classes, **cfg).eval()


def our_kwargs(cfg: dict, pretrain_size: int, num_classes: int = 10) -> dict:
    """The same configuration as ``backbones.transnext.TransNeXt`` arguments."""
    return dict(depths=tuple(cfg['depths']), embed_dims=tuple(cfg['embed_dims']), num_heads=tuple(cfg['num_heads']),
                mlp_ratios=tuple(cfg['mlp_ratios']), sr_ratios=tuple(cfg['sr_ratios']),
                window_size=tuple(cfg['window_size']), pretrain_size=pretrain_size, num_classes=num_classes)


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter off its init so each path of the model shows in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(('relative_pos_bias_local', 'learnable_bias', 'learnable_tokens', 'query_embedding')):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith('temperature'):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith('weight') and p.ndim == 1:  # norms
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def write_fixture(root: Path, out: Path) -> None:
    mod = official_module(root)
    fixture = {}
    for key, cfg in FIXTURE_CFGS.items():
        torch.manual_seed(SEED)  # the official init draws from the global generator
        official = build_official(mod, cfg, FIXTURE_SIZES[0], FIXTURE_PRETRAIN)
        perturb_(official, torch.Generator().manual_seed(SEED))
        state = _parity.fp16_state_(official)
        logits = {}
        for size in FIXTURE_SIZES:
            model = build_official(mod, cfg, size, FIXTURE_PRETRAIN)
            model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
            with torch.no_grad():
                logits[(size, size)] = model(fixture_input(size, size))
        fixture[key] = dict(cfg=our_kwargs(cfg, FIXTURE_PRETRAIN), state_dict=state, logits=logits)
    torch.save(fixture, out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.1f} KiB)')


def check_variant(root: Path, variant: str, sizes=(256,)) -> None:
    mod = official_module(root)
    entry, size, pretrain = OFFICIAL_VARIANTS[variant]
    torch.manual_seed(SEED)
    official = getattr(mod, entry)(img_size=size, pretrain_size=pretrain).eval()
    perturb_(official, torch.Generator().manual_seed(SEED))
    state = official.state_dict()
    ours = _parity.load_official_(_parity.ours(variant), state)

    def official_at(hw: tuple[int, int]) -> torch.nn.Module:  # the official model is built for one input size
        model = getattr(mod, entry)(img_size=hw[0], pretrain_size=pretrain).eval()
        model.load_state_dict(state, strict=True)
        return model

    # float64 first: a float32 round trip would round the official float64 buffer (stage 4's log N)
    _parity.compare(f'{variant} (official built for each size, pretrain_size {pretrain})', official_at, ours,
                    dict.fromkeys((size, *sizes)), dtypes=(torch.float64, torch.float32))


if __name__ == '__main__':
    p = _parity.parser(__doc__, dict(official='github.com/DaiShiResearch/TransNeXt'),
                       'compare a full-size variant (e.g. transnext_micro) at its size and others')
    p.add_argument('--sizes', type=int, nargs='*', default=[256], help='extra sizes for --check')
    _parity.main(p, ['official'], write_fixture, check_variant)
