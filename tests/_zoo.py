"""The zoo's registry as the tests walk it: every model registered by ``backbones``, and the smallest per family.

A family is a model-name prefix up to the first size word (``nat``, ``dinat``, ``dinat_s``, ``maxvit_na``), so a
new family is covered by these tests as soon as it is registered.
"""
import functools
import re

import timm
import torch
from timm.models import model_entrypoint

import backbones  # noqa: F401  (registers the zoo's models)

_SIZES = r'atto|femto|pico|nano|micro|mini|xxtiny|xtiny|tiny|small|medium|base|large|xlarge|huge'
# \d+g: GLNet's compute sizes (glnet_4g, glnet_9g, glnet_16g); \d+: numbered sizes (moat_0 ... moat_4)
_SIZE_WORD = re.compile(rf'_(?:{_SIZES}|\d+g|\d+)(?:_|$)')
_LEADING_SIZE = re.compile(rf'^(?:{_SIZES})_')  # tiny_moat_0: a size word before the family name


def zoo_models() -> list[str]:
    """Every model whose entrypoint lives in the ``backbones`` package."""
    return sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith('backbones.'))


def family(name: str) -> str:
    name = _LEADING_SIZE.sub('', name)
    m = _SIZE_WORD.search(name)
    return name[:m.start()] if m else name


@functools.cache
def num_params(name: str) -> int:
    with torch.device('meta'):
        return sum(p.numel() for p in timm.create_model(name).parameters())


@functools.cache
def smallest_per_family() -> tuple[str, ...]:
    """The variant with the fewest parameters of each family (ties: the first name)."""
    best: dict[str, str] = {}
    for name in zoo_models():
        fam = family(name)
        if fam not in best or num_params(name) < num_params(best[fam]):
            best[fam] = name
    return tuple(sorted(best.values()))


def assert_grad_checkpointing_matches(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs and every parameter gradient are the same with ``set_grad_checkpointing(True)``; returns the grads."""
    ref = model(x)
    ref.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)
    return grads


def assert_official_round_trip(name: str, kwargs: dict, to_official, filter_fn, wrap: str) -> dict:
    """An official-layout state dict of ``name`` (plain, under ``model``, or with DDP's ``module.``) loads strictly
    through ``filter_fn`` into a fresh model, with and without classifier; returns the official state dict."""
    model = timm.create_model(name, **kwargs)
    official = to_official(model.state_dict())
    ckpt = {'plain': official, 'model': {'model': official, 'epoch': 3},
            'module': {'model': {'module.' + k: v for k, v in official.items()}}}[wrap]
    fresh = timm.create_model(name, **kwargs)
    fresh.load_state_dict(filter_fn(ckpt, fresh), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    headless = timm.create_model(name, **kwargs, num_classes=0)
    headless.load_state_dict(filter_fn(ckpt, headless), strict=True)
    return official
