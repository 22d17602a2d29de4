"""What the official-parity scripts (``tools/*_parity.py``) and their CI tests share.

A parity script runs a family's official code next to ours, outside the package: ``--write`` builds a reduced
official model with perturbed random weights and saves its state dict and logits as a CI fixture (``tests/data``),
``--check`` maps a full-size official variant's weights onto ours and prints the largest logit differences. What
differs per family (the official imports and their shims, the reduced configurations, how to perturb the weights)
stays in its script; the rest is here:

* the fixed inputs (:func:`fixture_input`) and the seed; the BatchNorm-statistics perturbation (each script
  perturbs its parameters by its own rules first, then calls :func:`perturb_running_stats_`, so its generator's
  draws stay in that order);
* importing official code without letting its ``@register_model`` replace our timm names (:func:`official_code`,
  :func:`load_module`);
* the fp16 round trip of a fixture's weights (:func:`fp16_state_`), our model built and loaded from an official
  state dict through the zoo's own checkpoint fit (:func:`ours`, :func:`load_official_`), the printed comparison
  (:func:`compare`);
* the command line (:func:`parser`, :func:`main`).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ['SEED', 'compare', 'fixture_input', 'fp16_state_', 'load_module', 'load_official_', 'main', 'official_code',
           'ours', 'parser', 'perturb_running_stats_', 'variant_args']

SEED = 0  # of the official inits (global generator) and of every perturbation generator


def fixture_input(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """The fixed ``[1, 3, h, w]`` input of one size, from a seeded CPU generator."""
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed + h + w))


@torch.no_grad()
def perturb_running_stats_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move BatchNorm running statistics off their init (mean ~ 0.1 N(0, 1), var in [0.5, 1.5))."""
    for name, b in model.named_buffers():
        if name.endswith('running_mean'):
            b.copy_(0.1 * torch.randn(b.shape, generator=gen))
        elif name.endswith('running_var'):
            b.copy_(0.5 + torch.rand(b.shape, generator=gen))


@contextmanager
def official_code(*paths: Path) -> Iterator[None]:
    """Import official code meanwhile: ``paths`` first on ``sys.path`` (left there: the official modules import
    their siblings later too), timm's ``register_model`` a no-op, so the official entrypoints (some named as ours,
    e.g. ``biformer_small``) stay out of timm's registry and ``timm.create_model`` keeps building our models."""
    import timm.models
    import timm.models._registry
    import timm.models.registry

    for path in reversed(paths):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    holders = (timm.models, timm.models.registry, timm.models._registry)
    saved = [h.register_model for h in holders]
    for h in holders:
        h.register_model = lambda fn: fn
    try:
        yield
    finally:
        for h, fn in zip(holders, saved):
            h.register_model = fn


def load_module(name: str, path: Path) -> types.ModuleType:
    """The official file ``path`` run as module ``name`` (filed in ``sys.modules`` first: some official files look
    their own module up while they run), its entrypoints kept out of timm's registry."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with official_code():
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module


@torch.no_grad()
def fp16_state_(model: torch.nn.Module, keep: Callable[[str, torch.Tensor], bool] = lambda k, v: True
                ) -> dict[str, torch.Tensor]:
    """The fixture's copy of ``model``'s weights: its state dict (the entries ``keep`` accepts) with floating-point
    values stored in fp16, and ``model`` set to exactly those values (back in fp32), so the fixture's logits are
    computed from what it stores."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items() if keep(k, v)}
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()},
                          strict=len(state) == len(model.state_dict()))
    return state


def ours(variant: str, **kwargs: Any) -> torch.nn.Module:
    """Our ``variant`` (``timm.create_model``, ``kwargs`` over its table's arguments), in eval mode."""
    import timm

    import backbones  # noqa: F401  (registers the zoo)

    return timm.create_model(variant, **kwargs).eval()


def variant_args(variant: str) -> dict[str, Any]:
    """The model arguments of our ``variant`` (its row of the family's table), to build the official model alike."""
    import backbones  # noqa: F401  (registers the zoo)
    from backbones._family import family_of

    family = family_of(variant)
    if family is None:
        raise ValueError(f'{variant!r} is not a model of the zoo')
    return dict(family.variants[variant].args)


def load_official_(model: torch.nn.Module, state_dict: Mapping[str, Any], like: str | None = None
                   ) -> torch.nn.Module:
    """Load an official state dict into ``model`` (a zoo model) through the zoo's checkpoint fit (what
    ``pretrained=True`` uses: renamed, then validated strictly). ``like``: for a model built from its class (a
    fixture's reduced model), a variant of the same family and class, whose loading rules apply."""
    from backbones.checkpoint import fit

    if like is not None:
        model.pretrained_cfg = dict(architecture=like)
    model.load_state_dict(fit({'model': dict(state_dict)}, model), strict=True)
    return model


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def compare(label: str, official: torch.nn.Module | Callable[[tuple[int, int]], torch.nn.Module],
            model: torch.nn.Module, sizes: Sequence[int | Sequence[int]],
            dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
            note: Callable[[torch.nn.Module, torch.Tensor], str] | None = None) -> None:
    """Print, per dtype and input size, the largest ``|official - ours|`` logit difference and the largest logit.

    ``official`` is a model, or for official models built for one input size a function size -> model (called per
    dtype and size). float64 shows whether differences beyond rounding remain. ``note(official, x)`` adds a text.
    """
    for dtype in dtypes:
        model.to(dtype)
        for size in sizes:
            h, w = _hw(size)
            ref = official if isinstance(official, torch.nn.Module) else official((h, w))
            ref.to(dtype)
            x = fixture_input(h, w).to(dtype)
            with torch.no_grad():
                a, b = ref(x), model(x)
            extra = note(ref, x) if note else ''
            print(f'{label} {dtype} @ {h}x{w}: max |official - ours| logits = {(a - b).abs().max():.3e} '
                  f'(largest logit {a.abs().max():.2f}{extra})')
    model.float()


def parser(doc: str, repos: Mapping[str, str], check_help: str, *, required: bool = True,
           check_nargs: str | None = None, check_choices: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parity scripts' command line: ``--<name>`` (a checkout of each official repository in ``repos``: name ->
    address), ``--write`` (where the CI fixture goes: a file, or a folder for scripts of several fixtures) and
    ``--check`` (a full-size variant; with ``check_nargs``, several)."""
    p = argparse.ArgumentParser(description=doc.split('\n')[0])
    for name, address in repos.items():
        p.add_argument(f'--{name}', type=Path, required=required, help=f'checkout of {address}')
    several = len(repos) > 1
    p.add_argument('--write', type=Path, help=f'write the CI fixture{"s into this folder" if several else " here"}')
    check: dict[str, Any] = dict(help=check_help)
    if check_nargs:
        check.update(nargs=check_nargs, default=[] if check_nargs == '*' else None)
    if check_choices:
        check.update(choices=sorted(check_choices))
    p.add_argument('--check', **check)
    return p


def main(p: argparse.ArgumentParser, repos: Sequence[str], write: Callable[..., None], check: Callable[..., None],
         argv: Sequence[str] | None = None) -> None:
    """Parse the command line of :func:`parser` and run: ``write(root, out)``, then ``check(root, variant,
    **extra)`` per variant given, where ``root`` is the checkout (a dict name -> checkout for several repositories)
    and ``extra`` the options a script added to the parser."""
    args = p.parse_args(argv)
    if not args.write and not args.check:
        p.error('give --write and/or --check')
    values = vars(args)
    root = values[repos[0]] if len(repos) == 1 else {name: values[name] for name in repos}
    extra = {k: v for k, v in values.items() if k not in {*repos, 'write', 'check'}}
    if args.write:
        write(root, args.write)
    for variant in [args.check] if isinstance(args.check, str) else args.check or ():
        check(root, variant, **extra)
