"""Run the official Agent-Attention / InLine Swin and PVT code next to ours: write the CI fixtures, or check a variant.

The official code is imported from checkouts given by ``--agent`` (https://github.com/LeapLabTHU/Agent-Attention:
``agent_transformer/models/agent_{swin,pvt}.py``) and ``--inline`` (https://github.com/LeapLabTHU/InLine:
``models/inline_{swin,pvt}.py``); they import only torch and timm (``timm.models.layers`` et al., still aliased by
timm 1.x), so no stand-ins are needed.

Usage (from the attnzoo root)::

    git clone https://github.com/LeapLabTHU/Agent-Attention /tmp/Agent-Attention
    git clone https://github.com/LeapLabTHU/InLine /tmp/InLine
    PYTHONPATH=. python tools/agent_inline_official_parity.py --agent /tmp/Agent-Attention --inline /tmp/InLine \\
        --write tests/data
    PYTHONPATH=. python tools/agent_inline_official_parity.py --agent /tmp/Agent-Attention --check agent_swin_tiny

``--write`` builds reduced official models (``FIXTURES``: every attention kind, a mixed ``M`` stage, a shifted
window stage and one whose map equals the window; PVT with a spatial-reduction stage) with perturbed random
weights, runs them at their build size (the only size the official classification models accept), and saves each
official-layout state dict (fp16 values, run in fp32) with the logits, the official letter code and our constructor
arguments (:func:`our_args`) as ``tests/data/<name>_official.pt``; ``tests/test_agent.py`` / ``tests/test_inline.py``
load them through ``backbones.checkpoint.fit`` and compare (``tests/_skeletons.py``).
``--check`` builds a full variant both ways and prints the largest logit difference at its build size (fp32, fp64);
``--downstream`` compares an Agent variant's stage outputs with the official detection backbone (its mmdet / mmcv
imports stubbed here) at a non-build, non-multiple-of-32 size with the official downstream agent grids.
"""
from __future__ import annotations

import types
from functools import partial
from pathlib import Path

import _parity
import torch
from _parity import SEED, fixture_input

import backbones  # noqa: F401  (registers the models)
from backbones._attn_kinds import parse_attn_code
from backbones._family import FAMILIES
from backbones._skeletons import SKELETONS

# name: (repository, official file, our skeleton, our constructor arguments with the official letter code as
# attn_type; the official ones are derived)
FIXTURES = {
    'agent_swin': ('agent', 'agent_transformer/models/agent_swin.py', 'swin', dict(
        img_size=128, embed_dim=4, depths=(1, 2, 2, 1), num_heads=(1, 2, 2, 4), window_size=64,
        agent_num=(4, 9, 4, 1), attn_type='AMBA1', num_classes=10)),
    'agent_pvt': ('agent', 'agent_transformer/models/agent_pvt.py', 'pvt', dict(
        img_size=64, embed_dims=(4, 8, 16, 16), depths=(1, 1, 1, 2), num_heads=(1, 2, 2, 2), mlp_ratios=(2, 2, 2, 2),
        sr_ratios=(8, 4, 2, 1), agent_num=(4, 4, 1, 1), attn_type='ABAA', num_classes=10)),
    'inline_swin': ('inline', 'models/inline_swin.py', 'swin', dict(
        img_size=128, embed_dim=4, depths=(1, 2, 2, 1), num_heads=(1, 2, 2, 4), window_size=64,
        attn_type='IMSI1', num_classes=10)),
    'inline_pvt': ('inline', 'models/inline_pvt.py', 'pvt', dict(
        img_size=64, embed_dims=(4, 8, 16, 16), depths=(1, 1, 1, 2), num_heads=(1, 2, 2, 2), mlp_ratios=(2, 2, 2, 2),
        sr_ratios=(8, 4, 2, 1), attn_type='ISII', num_classes=10)),
}


OFFICIAL_FILES = {('agent', 'swin'): 'agent_transformer/models/agent_swin.py',
                  ('agent', 'pvt'): 'agent_transformer/models/agent_pvt.py',
                  ('inline', 'swin'): 'models/inline_swin.py', ('inline', 'pvt'): 'models/inline_pvt.py'}


def official_module(path: Path) -> types.ModuleType:
    return _parity.load_module(f'official_{path.stem}', path)


def official_model(module: types.ModuleType, family: str, skeleton: str, args: dict) -> torch.nn.Module:
    """The official constructor with our arguments translated (agent_num as strings, as the configs pass it)."""
    torch.manual_seed(SEED)
    common = dict(img_size=args.get('img_size', 224), num_classes=args.get('num_classes', 1000), drop_path_rate=0.,
                  attn_type=args['attn_type'])
    if family == 'agent':
        common['agent_num'] = [str(a) for a in args.get('agent_num', (9, 16, 49, 49))]
    if skeleton == 'swin':
        cls = module.AgentSwinTransformer if family == 'agent' else module.InLineSwin
        return cls(embed_dim=args['embed_dim'], depths=list(args['depths']), num_heads=list(args['num_heads']),
                   window_size=args['window_size'], **common).eval()
    sr_key = 'agent_sr_ratios' if family == 'agent' else 'la_sr_ratios'
    return module.PyramidVisionTransformer(
        patch_size=4, embed_dims=list(args['embed_dims']), num_heads=list(args['num_heads']),
        mlp_ratios=list(args['mlp_ratios']), qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        depths=list(args['depths']), sr_ratios=list(args['sr_ratios']), **{sr_key: '1111'}, **common).eval()


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter off its init (norm weights around 1, the rest by 0.02 N(0, 1); the zero-initialised
    biases and position embeddings too) so each path of the model shows in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('weight') and p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)


def our_args(family: str, skeleton: str, args: dict) -> dict:
    """Our skeleton's constructor arguments from a fixture's: its letter code ``attn_type`` as ``attn_kinds``, read
    with the family's letters (as ``timm.create_model`` reads a variant's)."""
    args = dict(args)
    code = args.pop('attn_type')
    depths = args['depths'] if 'depths' in args else (args['depth'],)  # DeiT: one stage
    args['attn_kinds'] = parse_attn_code(code, depths, FAMILIES[family].letters[skeleton])
    return args


def save_fixture(out: Path, family: str, skeleton: str, args: dict, state: dict, logits: dict,
                 diff: float) -> None:
    """Write a fixture as ``tests/_skeletons.py`` reads it: our constructor arguments (``args``: with the official
    code as ``attn_type``, kept beside them), the official-layout state dict, the logits per input size."""
    torch.save(dict(family=family, skeleton=skeleton, attn_type=args['attn_type'],
                    args=our_args(family, skeleton, args), state_dict=state, logits=logits), out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.1f} KiB); max |official - ours| = {diff:.2e}')


def write_fixtures(roots: dict[str, Path], out_dir: Path) -> None:
    for name, (family, rel, skeleton, args) in FIXTURES.items():
        if family not in roots:
            continue
        official = official_model(official_module(roots[family] / rel), family, skeleton, args)
        perturb_(official, torch.Generator().manual_seed(SEED))
        # fp16 values; the derived buffers (relative_position_index, attn_mask: most of the bytes) left out, as the
        # filter drops them anyway (the round-trip tests give it official dicts with them)
        state = _parity.fp16_state_(official, keep=lambda k, v: v.is_floating_point() and not k.endswith('attn_mask'))
        size = args['img_size']
        with torch.no_grad():
            logits = official(fixture_input(size, size))
        model = SKELETONS[skeleton](**our_args(family, skeleton, args)).eval()
        _parity.load_official_(model, state, like=f'{family}_{skeleton}_tiny')
        with torch.no_grad():
            diff = (model(fixture_input(size, size)) - logits).abs().max().item()
        save_fixture(out_dir / f'{name}_official.pt', family, skeleton, args, state, {(size, size): logits}, diff)


def check_variant(roots: dict[str, Path], variant: str) -> None:
    family = 'agent' if variant.startswith('agent_') else 'inline'
    cfg = _parity.variant_args(variant)
    skeleton = cfg.pop('skeleton')
    official = official_model(official_module(roots[family] / OFFICIAL_FILES[family, skeleton]), family, skeleton,
                              cfg)
    perturb_(official, torch.Generator().manual_seed(SEED))
    model = _parity.load_official_(_parity.ours(variant), official.state_dict())
    _parity.compare(variant, official, model, [cfg.get('img_size', 224)])


class _Registry:
    """Stand-in for mmdet's BACKBONES (``register_module`` with or without a call)."""

    def register_module(self, cls=None, **kwargs):
        return cls if cls is not None else (lambda c: c)


def downstream_module(root: Path, skeleton: str) -> types.ModuleType:
    """The official detection backbone (``downstream/detection/mmdet/models/backbones/agent_{swin,pvt}.py``) with its
    mmdet / mmcv imports (registry, logger, checkpoint loader: unused here) replaced by stand-ins."""
    path = root / 'downstream' / 'detection' / 'mmdet' / 'models' / 'backbones' / f'agent_{skeleton}.py'
    src = path.read_text()
    for line in ('from ..builder import BACKBONES', 'from ...utils import get_root_logger',
                 'from mmcv.runner import _load_checkpoint'):
        src = src.replace(line, '')
    module = types.ModuleType(f'official_downstream_agent_{skeleton}')
    module.BACKBONES = _Registry()
    exec(compile(src, str(path), 'exec'), module.__dict__)
    return module


def check_downstream(root: Path, variant: str, size: tuple[int, int] = (250, 330)) -> None:
    """Our stage outputs vs the official detection backbone's (output norms removed) with the official downstream
    agent grids, at a detection-like size that is not the build size (biases resized on the fly) nor a multiple of
    32 (padding, odd merges); fp64."""
    cfg = _parity.variant_args(variant)
    skeleton = cfg.pop('skeleton')
    shapes = [(9, 9), (12, 12), (14, 14), (7, 7)] if skeleton == 'swin' else [(12, 12), (16, 16), (28, 28), (28, 28)]
    module = downstream_module(root, skeleton)
    torch.manual_seed(SEED)
    common = dict(img_size=cfg.get('img_size', 224), depths=list(cfg['depths']), num_heads=list(cfg['num_heads']),
                  agent_num=[9, 16, 49, 49], downstream_agent_shapes=shapes, attn_type=cfg['attn_type'],
                  drop_path_rate=0.)
    if skeleton == 'swin':
        official = module.AgentSwinTransformer(embed_dim=cfg['embed_dim'], window_size=cfg['window_size'], **common)
        for i in range(4):
            setattr(official, f'norm{i}', torch.nn.Identity())
    else:
        official = module.AgentPVT(embed_dims=list(cfg['embed_dims']), mlp_ratios=list(cfg['mlp_ratios']),
                                   qkv_bias=True, sr_ratios=list(cfg['sr_ratios']), **common)
    official.eval()
    perturb_(official, torch.Generator().manual_seed(SEED))
    model = _parity.ours(variant, num_classes=0, agent_shapes=shapes)
    state = dict(official.state_dict())
    state.update({k: v for k, v in model.state_dict().items() if k.startswith('norm.')})  # unused by the stages
    _parity.load_official_(model, state)
    official.double()
    model.double()
    x = fixture_input(*size).double()
    with torch.no_grad():
        theirs = official(x)
        ours = model.forward_intermediates(x, intermediates_only=True)
    diffs = [f'{(a - b).abs().max():.1e}' for a, b in zip(theirs, ours)]
    print(f'{variant} vs the official detection backbone @ {size}, fp64, agent grids {shapes}: max |diff| per '
          f'stage {diffs} (shapes {[tuple(t.shape[2:]) for t in ours]})')


def main(argv=None) -> None:
    repos = dict(agent='github.com/LeapLabTHU/Agent-Attention', inline='github.com/LeapLabTHU/InLine')
    parser = _parity.parser(__doc__, repos, 'compare full variants (e.g. agent_swin_tiny)', required=False,
                            check_nargs='*')
    parser.add_argument('--downstream', nargs='*', default=[],
                        help='compare Agent variants with the official detection backbone at a detection-like size')
    args = parser.parse_args(argv)
    roots = {k: v for k in repos if (v := getattr(args, k)) is not None}
    if not roots or not (args.write or args.check or args.downstream):
        parser.error('give --agent and/or --inline, and --write, --check and/or --downstream')
    if args.write:
        write_fixtures(roots, args.write)
    for variant in args.check:
        check_variant(roots, variant)
    for variant in args.downstream:
        check_downstream(roots['agent'], variant)


if __name__ == '__main__':
    main()
