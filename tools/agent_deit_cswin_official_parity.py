"""Run the official Agent-/InLine-DeiT and -CSWin code next to ours: write the CI parity fixtures, or check a variant.

The official code is imported from checkouts given by ``--agent`` (https://github.com/LeapLabTHU/Agent-Attention:
``agent_transformer/models/agent_deit.py``, ``deit.py``, ``agent_cswin.py``) and ``--inline``
(https://github.com/LeapLabTHU/InLine: ``models/inline_deit.py``, ``inline_cswin.py``). Stand-ins, here only: an
``einops.layers.torch.Rearrange`` for the one pattern the CSWin stems use (``b c h w -> b (h w) c``) when einops is
not installed, and a no-op ``register_model`` while the official modules import (their ``vit_*`` / ``deit_*``
entries would shadow timm's, and their old cfg keys no longer parse).

Usage (from the attnzoo root)::

    git clone https://github.com/LeapLabTHU/Agent-Attention /tmp/Agent-Attention
    git clone https://github.com/LeapLabTHU/InLine /tmp/InLine
    PYTHONPATH=. python tools/agent_deit_cswin_official_parity.py --agent /tmp/Agent-Attention --inline /tmp/InLine \\
        --write tests/data
    PYTHONPATH=. python tools/agent_deit_cswin_official_parity.py --agent /tmp/Agent-Attention --inline /tmp/InLine \\
        --check agent_deit_tiny agent_cswin_tiny inline_deit_tiny inline_cswin_tiny

``--write`` builds reduced official models (``FIXTURES``: every attention letter, Agent-CSWin also with stripe
windows, odd patch grids) with perturbed random weights, runs each at its build size (the official models reject
any other), and saves ``<name>_official.pt`` as the Swin / PVT script does (its ``save_fixture``: our constructor
arguments, the official-layout state dict in fp16 values, run in fp32, and the logits).
``tests/test_agent_deit_cswin.py`` loads them through ``backbones.checkpoint.fit`` and compares. ``--check`` does the
same for full-size variants at their build size in fp32 and fp64.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import _parity
import torch
from _parity import SEED, fixture_input
from agent_inline_official_parity import our_args, save_fixture
from torch import nn

from backbones._skeletons import SKELETONS

# name: (official module, official constructor, official kwargs, our skeleton ('deit' / 'cswin'), our kwargs with a
# letter code as attn_type (DeiT has none: agent_layer=2 is AAB), input)
_CSWIN_SMALL = dict(embed_dim=8, depth=[1, 2, 2, 1], num_heads=[2, 2, 4, 4], split_size=[1, 2, 2, 2], mlp_ratio=2.)
_OURS_CSWIN = dict(embed_dim=8, depths=(1, 2, 2, 1), num_heads=(2, 2, 4, 4), split_size=(1, 2, 2, 2), mlp_ratio=2.)
FIXTURES = {
    # blocks A, A, B (agent_layer=2); a 5x5 patch grid pooled to 3x3 agents (uneven adaptive pooling)
    'agent_deit': ('agent.agent_deit', 'VisionTransformer',
                   dict(img_size=80, patch_size=16, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2., num_classes=10,
                        agent_num=[9] * 4, agent_layer=2),
                   'deit', dict(img_size=80, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2., num_classes=10,
                                attn_type='AAB', attn_kwargs={'agent': {'agent_num': 9}}), (80, 80)),
    'inline_deit': ('inline.inline_deit', 'VisionTransformer',
                    dict(img_size=80, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2., num_classes=10),
                    'deit', dict(img_size=80, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2., num_classes=10,
                                 attn_type='II'), (80, 80)),
    # AAMB1 at 64: stage 1 agents over the whole 16x16 map, stage 2 agents in 8x4 / 4x8 stripes (la_split 4),
    # stage 3 one global agent block then a stripe LePE block, stage 4 global LePE
    'agent_cswin': ('agent.agent_cswin', 'CSWinTransformer',
                    dict(img_size=64, num_classes=10, attn_type='AAMB1', agent_num=[4, 4, 4, 1],
                         la_split_size='16-4-4-2', **_CSWIN_SMALL),
                    'cswin', dict(img_size=64, num_classes=10, attn_type='AAMB1', la_split_size=(16, 4, 4, 2),
                                  attn_kwargs={'agent': {'agent_num': (4, 4, 4, 1)}}, **_OURS_CSWIN), (64, 64)),
    # the official InLine branch works on one window per image only: the linear blocks are global
    'inline_cswin': ('inline.inline_cswin', 'CSWinTransformer',
                     dict(img_size=64, num_classes=10, attn_type='IIMS1', la_split_size='16-8-4-2', **_CSWIN_SMALL),
                     'cswin', dict(img_size=64, num_classes=10, attn_type='IIMS1', **_OURS_CSWIN), (64, 64)),
}

# our variant: (official module, official constructor, its kwargs: the entrypoint's and the cfg yaml's); the DeiT
# entrypoints pass an old timm's build_model_with_cfg arguments, so their VisionTransformer is called directly
_A_CSWIN = dict(attn_type='AABB', agent_num=['9', '16', '49', '49'], la_split_size='56-28-14-7')
_I_CSWIN = dict(attn_type='IISS', la_split_size='56-28-14-7')
_A_DEIT_S = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, agent_num=['49'] * 4)
VARIANTS = {
    'agent_deit_tiny': ('agent.agent_deit', 'VisionTransformer',
                        dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, agent_num=['49'] * 4)),
    'agent_deit_small': ('agent.agent_deit', 'VisionTransformer', _A_DEIT_S),
    'agent_deit_small_448': ('agent.agent_deit', 'VisionTransformer', dict(_A_DEIT_S, img_size=448)),
    'agent_deit_base': ('agent.agent_deit', 'VisionTransformer',
                        dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, agent_layer=4,
                             agent_num=['81'] * 4)),
    'agent_cswin_tiny': ('agent.agent_cswin', 'Agent_CSWin_64_24181_tiny_224', _A_CSWIN),
    'agent_cswin_small': ('agent.agent_cswin', 'Agent_CSWin_64_36292_small_224', _A_CSWIN),
    'agent_cswin_base': ('agent.agent_cswin', 'Agent_CSWin_96_36292_base_224', _A_CSWIN),
    'agent_cswin_base_384': ('agent.agent_cswin', 'Agent_CSWin_96_36292_base_384',
                             dict(_A_CSWIN, img_size=384, la_split_size='96-48-24-12')),
    'inline_deit_tiny': ('inline.inline_deit', 'VisionTransformer',
                         dict(patch_size=16, embed_dim=192, depth=12, num_heads=6)),
    'inline_deit_small': ('inline.inline_deit', 'VisionTransformer',
                          dict(img_size=288, patch_size=16, embed_dim=320, depth=12, num_heads=10)),
    'inline_deit_base': ('inline.inline_deit', 'VisionTransformer',
                         dict(img_size=448, patch_size=16, embed_dim=384, depth=12, num_heads=12)),
    'inline_cswin_tiny': ('inline.inline_cswin', 'inline_cswin_tiny', _I_CSWIN),
    'inline_cswin_small': ('inline.inline_cswin', 'inline_cswin_small', _I_CSWIN),
    'inline_cswin_base': ('inline.inline_cswin', 'inline_cswin_base', _I_CSWIN),
    'inline_cswin_base_384': ('inline.inline_cswin', 'inline_cswin_base_384',
                              dict(_I_CSWIN, img_size=384, la_split_size='96-48-24-12')),
}


class _Rearrange(nn.Module):
    """``einops.layers.torch.Rearrange('b c h w -> b (h w) c', ...)``, the only pattern the official CSWin uses."""

    def __init__(self, pattern: str, **sizes: int):
        super().__init__()
        if pattern != 'b c h w -> b (h w) c':
            raise NotImplementedError(pattern)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


def _shims() -> None:
    try:
        import einops.layers.torch  # noqa: F401
    except ImportError:
        einops, layers, layers_torch = (types.ModuleType(n) for n in ('einops', 'einops.layers', 'einops.layers.torch'))
        layers_torch.Rearrange = _Rearrange
        sys.modules.update({'einops': einops, 'einops.layers': layers, 'einops.layers.torch': layers_torch})


def official_module(roots: dict[str, Path], name: str) -> types.ModuleType:
    """``agent.<module>`` / ``inline.<module>`` from the official models folder, as a package (relative imports)
    whose ``__init__`` is not run."""
    _shims()
    family, module = name.split('.')
    package = f'official_{family}_models'
    if package not in sys.modules:
        folder = roots[family] / ('agent_transformer/models' if family == 'agent' else 'models')
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(folder)]
        sys.modules[package] = pkg
    with _parity.official_code():
        return importlib.import_module(f'{package}.{module}')


def perturb_(model: nn.Module, gen: torch.Generator) -> None:
    """Move every parameter off its init so each path shows in the output: norm weights ~ 1 + 0.1 N, the agent
    position biases (``*_bias`` tables) + 0.5 N, everything else + 0.02 N."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('weight') and p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.rsplit('.', 1)[-1].endswith('_bias'):
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)


def write_fixtures(roots: dict[str, Path], out_dir: Path) -> None:
    for name, (module, ctor, official_kwargs, skeleton, ours_kwargs, size) in FIXTURES.items():
        family = module.split('.')[0]
        torch.manual_seed(SEED)
        official = getattr(official_module(roots, module), ctor)(**official_kwargs).eval()
        perturb_(official, torch.Generator().manual_seed(SEED))
        state = _parity.fp16_state_(official)
        with torch.no_grad():
            logits = {size: official(fixture_input(*size))}
        # ours must agree before the fixture is written
        ours = SKELETONS[skeleton](**our_args(family, skeleton, ours_kwargs)).eval()
        _parity.load_official_(ours, state, like=f'{name}_tiny')
        with torch.no_grad():
            diff = (ours(fixture_input(*size)) - logits[size]).abs().max().item()
        save_fixture(out_dir / f'{name}_official.pt', family, skeleton, ours_kwargs, state, logits, diff)


def check_variant(roots: dict[str, Path], variant: str) -> None:
    module, fn, kwargs = VARIANTS[variant]
    torch.manual_seed(SEED)
    official = getattr(official_module(roots, module), fn)(**kwargs).eval()
    perturb_(official, torch.Generator().manual_seed(SEED))
    ours = _parity.ours(variant)
    n_official, n_ours = (sum(p.numel() for p in m.parameters()) for m in (official, ours))
    _parity.load_official_(ours, official.state_dict())
    _parity.compare(f'{variant} (params official {n_official} ours {n_ours})', official, ours,
                    [ours.pretrained_cfg['input_size'][1:]])


if __name__ == '__main__':
    _parity.main(_parity.parser(__doc__, dict(agent='github.com/LeapLabTHU/Agent-Attention',
                                              inline='github.com/LeapLabTHU/InLine'),
                                'compare full-size variants', check_nargs='+', check_choices=VARIANTS),
                 ['agent', 'inline'], write_fixtures, check_variant)
