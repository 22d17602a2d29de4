"""One way to read weights and one way to fit them, for every loader of the zoo.

``pretrained=True`` (and ``pretrained_cfg_overlay=dict(file=/url=)``), validate.py ``--checkpoint``, train.py
``--initial-checkpoint`` / ``--pretrained-path`` and the downstream backbone's ``init_cfg`` all go through:

* :func:`read_checkpoint`: what a file holds, as a dict: a local path, an http(s) URL (downloaded once into timm's
  cache) or ``hf-hub:<repo id>``; the one ``torch.load`` of the zoo, in ``weights_only`` mode with what official
  training checkpoints also hold allow-listed (:func:`checkpoint_safe_globals`), or the family's own reader
  (:attr:`backbones._family.Family.read_weights`: MOAT's TF1 releases);
* :func:`fit`: those weights in a model's layout. It unwraps once (:func:`unwrap_state_dict`: raw or EMA weights,
  by default the family's choice), renames the official keys and resizes what the model class's
  :class:`Layout` says may be resized, and reports once, in one line, how the weights fail to fit: the
  :class:`Layout`'s summary (blocks, widths, heads, ... of checkpoint vs model) and the missing, unexpected and
  mis-shaped keys (:func:`mismatch_report`);
* :func:`load_weights`: both, then ``load_state_dict``, with timm's adaptation of the classifier and first conv
  for pretrained weights (``head='adapt'``), a fresh classifier for fine-tuning (``head='new'``) or strictly.

A model class declares its :class:`Layout` as ``checkpoint_layout``; a model without one (timm's) is fitted as
saved. Errors: ``RuntimeError`` for a file that cannot be read, ``ValueError`` for weights that do not fit; the
loaders add which model and file, nothing else.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from timm.models import adapt_input_conv, clean_state_dict

from ._family import family_of

__all__ = ['EMA_KEYS', 'HEAD_FC', 'RAW_KEYS', 'Layout', 'PretrainedMixin', 'checkpoint_safe_globals', 'ema_first',
           'fit', 'load_weights', 'mismatch_report', 'model_name', 'pretrained_filter', 'read_checkpoint', 'rename',
           'stage_depths', 'stage_summary', 'unwrap_state_dict', 'WeightsMismatch']

EMA_KEYS = ('state_dict_ema', 'model_ema')
RAW_KEYS = ('state_dict', 'model')
HEAD_FC = (('head.weight', 'head.fc.weight'), ('head.bias', 'head.fc.bias'))  # an official ``head`` Linear -> ours


def model_name(model: torch.nn.Module) -> str:
    """The registered name of a model built by ``timm.create_model`` (its class name otherwise), for messages."""
    return (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__


def ema_first(model: torch.nn.Module | str) -> bool:
    """Whether the default weights of a checkpoint holding raw and EMA ones are the EMA ones: the family's choice
    (:attr:`backbones._family.Family.ema`), timm's (EMA first) for a model of no zoo family."""
    family = family_of(model)
    return family.ema_first(model if isinstance(model, str) else model_name(model)) if family else True


# ---------------------------------------------------------------------------------------------------------------
# Key templates

_FIELD = re.compile(r'\{(\w+)([+-]\d+)?\}')


@functools.cache
def _template(template: str) -> tuple[re.Pattern, tuple[tuple[str, int], ...]]:
    """A key template as a regex and its fields (name, offset): see :func:`rename`."""
    parts, fields, pos = [], [], 0
    for m in _FIELD.finditer(template):
        parts += [re.escape(template[pos:m.start()]), r'(\d+)']
        fields.append((m.group(1), int(m.group(2) or 0)))
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    start = '' if template.startswith('.') else '^'
    end = '' if template.endswith('.') else r'(?=\.|$)'
    return re.compile(start + ''.join(parts) + end), tuple(fields)


def rename(key: str, renames: Sequence[tuple[str, str]]) -> str:
    """``key`` through each ``(old, new)`` rule in turn (the first place ``old`` matches becomes ``new``).

    A template is literal key text with integer fields: ``'levels.{i}.downsample.'`` ->
    ``'stages.{i+1}.downsample.'``; ``{i}`` matches a number, ``{i+1}`` / ``{i-1}`` one off it, on either side, so
    ``rename(key, [(new, old) for old, new in renames])`` inverts a table. A template starting with ``.`` matches
    inside a key (``'.gamma{n}'``), any other at its start; one not ending in ``.`` must end a name component
    (``'head.weight'`` does not match ``head.weight_g``)."""
    for old, new in renames:
        pattern, fields = _template(old)
        m = pattern.search(key)
        if m:
            values = {name: int(text) - offset for (name, offset), text in zip(fields, m.groups())}
            filled = _FIELD.sub(lambda f, v=values: str(v[f.group(1)] + int(f.group(2) or 0)), new)
            key = key[:m.start()] + filled + key[m.end():]
    return key


# ---------------------------------------------------------------------------------------------------------------
# Layouts and the shared fit

Resize = Callable[[torch.Tensor, torch.Tensor, torch.nn.Module], torch.Tensor]


@dataclass(frozen=True)
class Layout:
    """How a model class's checkpoints are named and what in them is sized to a build resolution: what :func:`fit`
    needs besides the model. A model class declares it as ``checkpoint_layout``.

    * ``name``: what such checkpoints are, for messages (``'NAT/DiNAT/DiNAT_s'``);
    * ``marker``: a regex that some key of every such checkpoint matches once renamed (else: "not a <name>
      checkpoint");
    * ``renames``: ``(official, ours)`` key templates (:func:`rename`), applied to every key; they leave our own
      keys as they are, so ours and official files load alike;
    * ``derived``: regexes of official buffers computed from the sizes (dropped);
    * ``resize``: key regex -> ``fn(value, model's tensor, module owning it)`` giving the model's shape, applied
      where the shapes differ (position tables of another kernel, window or build size);
    * ``summary``: state dict (ours) -> ``{label: value}``, compared between checkpoint and model when they do not
      fit (:func:`stage_summary`);
    * ``classifier``: our classifier modules (a headless model drops their keys).
    """

    name: str = ''
    marker: str | None = None
    renames: tuple[tuple[str, str], ...] = ()
    derived: tuple[str, ...] = ()
    resize: Mapping[str, Resize] = field(default_factory=dict)
    summary: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    classifier: tuple[str, ...] = ('head.fc',)

    def to_official(self, state_dict: Mapping[str, Any], renames: Sequence[tuple[str, str]] | None = None
                    ) -> dict[str, Any]:
        """``state_dict`` (ours) in the official layout: the renames inverted (``renames``: a subset of them, for a
        layout that several official ones map onto)."""
        inverse = [(new, old) for old, new in (self.renames if renames is None else renames)]
        return {rename(k, inverse): v for k, v in state_dict.items()}


def stage_summary(widths: str, extra: Mapping[str, str | tuple[str, Callable]] | None = None
                  ) -> Callable[[Mapping[str, Any]], dict[str, list]]:
    """A :attr:`Layout.summary` for the zoo's stage layout (``stages.{s}.blocks.{b}.*``): blocks per stage, the
    stage widths (the first dim of each stage's ``blocks.0.<widths>``) and per ``extra`` label a value read from
    ``blocks.0.<suffix>``: its first dim, or ``fn(tensor)`` for ``(suffix, fn)``; None where absent."""
    fields = {'stage widths': widths, **(extra or {})}

    def summary(state_dict: Mapping[str, Any]) -> dict[str, list]:
        def read(s: int, spec: str | tuple[str, Callable]):
            suffix, fn = (spec, lambda t: t.shape[0]) if isinstance(spec, str) else spec
            t = state_dict.get(f'stages.{s}.blocks.0.{suffix}')
            return None if t is None else fn(t)
        depths = stage_depths(state_dict)
        return {'blocks per stage': depths, **{label: [read(s, spec) for s in range(len(depths))]
                                               for label, spec in fields.items()}}
    return summary


def stage_depths(state_dict: Mapping[str, Any]) -> list[int]:
    """Blocks per stage of a state dict in the zoo's stage layout (``stages.{s}.blocks.{b}.*``)."""
    depths: dict[int, int] = {}
    for k in state_dict:
        m = re.match(r'^stages\.(\d+)\.blocks\.(\d+)\.', k)
        if m:
            depths[int(m.group(1))] = max(depths.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    return [depths.get(s, 0) for s in range(max(depths) + 1)] if depths else []


def unwrap_state_dict(
        checkpoint: Mapping[str, Any],
        use_ema: bool | None = None,
        prefer_ema: bool = True,
) -> dict[str, torch.Tensor]:
    """The weights of a plain state dict or of a wrapped checkpoint, without DDP's ``module.`` prefix.

    ``use_ema`` True / False takes the EMA (``state_dict_ema`` / ``model_ema``) / raw (``state_dict`` / ``model``)
    entry and raises ``ValueError`` when the file has none; None takes the EMA entry first when ``prefer_ema``, else
    the raw one first. Raises ``ValueError`` naming the first entry that is not a tensor (e.g. a wrapper this
    function does not know).
    """
    present = [k for k in EMA_KEYS + RAW_KEYS if isinstance(checkpoint.get(k), Mapping)]
    if use_ema is True:
        order = EMA_KEYS
        if not any(k in present for k in EMA_KEYS):
            raise ValueError(f'the checkpoint holds no EMA weights (no {" / ".join(EMA_KEYS)} entry)')
    elif use_ema is False:
        order = RAW_KEYS
        if present and not any(k in present for k in RAW_KEYS):
            raise ValueError(f'the checkpoint holds only EMA weights ({", ".join(present)}), no '
                             f'{" / ".join(RAW_KEYS)} entry')
    else:
        order = EMA_KEYS + RAW_KEYS if prefer_ema else RAW_KEYS + EMA_KEYS
    key = next((k for k in order if k in present), None)
    weights = checkpoint[key] if key else checkpoint
    for k, v in weights.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f'checkpoint entry {k!r} is a {type(v).__name__}, not a tensor; expected a state dict, '
                             f'optionally wrapped in one of {EMA_KEYS + RAW_KEYS}')
    return clean_state_dict(dict(weights))


def mismatch_report(
        expected: Mapping[str, Any],
        state_dict: Mapping[str, Any],
        optional: Collection[str] = (),
) -> str | None:
    """One line saying how ``state_dict`` fails to fit ``expected`` (name -> tensor), or None when it fits.

    Keys in ``optional`` may be missing, differently shaped or extra (a classifier that is adapted afterwards).
    """
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected and k not in optional]
    shapes = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
              if k in state_dict and k not in optional and tuple(state_dict[k].shape) != tuple(v.shape)]

    def _few(items: list[str]) -> str:
        return ', '.join(items[:3]) + (', ...' if len(items) > 3 else '')

    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys ({_few(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys ({_few(unexpected)})')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatches (checkpoint vs model: {_few(shapes)})')
    return '; '.join(problems) or None


class WeightsMismatch(ValueError):
    """Weights that do not fit a model: ``model`` its name, ``detail`` what differs (one line)."""

    def __init__(self, model: str, detail: str):
        super().__init__(f'{model}: checkpoint does not match the model: {detail}')
        self.model, self.detail = model, detail


def _owner(model: torch.nn.Module, key: str) -> torch.nn.Module:
    return model.get_submodule(key.rpartition('.')[0])


def fit(
        checkpoint: Mapping[str, Any],
        model: torch.nn.Module,
        use_ema: bool | None = None,
        optional: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """The weights of ``checkpoint`` (a state dict, possibly wrapped; ours or the official layout) in ``model``'s
    layout, fitting it strictly but for the keys in ``optional``.

    Unwraps once (``use_ema``, by default the family's choice), drops the derived buffers, renames, drops the
    classifier of a headless model, resizes what the layout may resize. Raises ``ValueError`` with one line: not a
    checkpoint of this layout, or what differs (the layout's summary of checkpoint vs model, then the keys).
    """
    layout = getattr(type(model), 'checkpoint_layout', None) or Layout()
    name = model_name(model)
    state_dict = unwrap_state_dict(checkpoint, use_ema, prefer_ema=ema_first(model))
    derived = re.compile(rf'(^|\.)(?:{"|".join(layout.derived)})$') if layout.derived else None
    state_dict = {rename(k, layout.renames): v for k, v in state_dict.items() if not (derived and derived.search(k))}
    if layout.marker and not any(re.search(layout.marker, k) for k in state_dict):
        raise ValueError(f'{name}: not a {layout.name} checkpoint (no weights matching {layout.marker!r}; first keys '
                         f'{list(state_dict)[:3]})')
    expected = model.state_dict()
    heads = tuple(f'{c}.' for c in layout.classifier if not any(k.startswith(f'{c}.') for k in expected))
    if heads:  # a headless model takes the backbone only
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(heads)}
    for pattern, resize in layout.resize.items():
        for k, v in state_dict.items():
            if k in expected and k not in optional and v.shape != expected[k].shape and re.search(pattern, k):
                state_dict[k] = resize(v, expected[k], _owner(model, k))
    problem = mismatch_report(expected, state_dict, optional)
    if problem is None:
        return state_dict
    diffs = []
    if layout.summary is not None:
        have, want = layout.summary(state_dict), layout.summary(expected)
        diffs = [f'{label}: checkpoint {have[label]} vs model {want[label]}' for label in want
                 if have[label] != want[label]]
    raise WeightsMismatch(name, '; '.join(diffs + [problem]))


def _pretrained_optional(model: torch.nn.Module) -> tuple[set[str], dict[str, int]]:
    """What timm's loader adapts: the classifier keys when ``num_classes`` differs from the cfg's (dropped), and
    the first convs (key -> model's input channels) whose input channels differ from the cfg's (adapted)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    heads: set[str] = set()
    if getattr(model, 'num_classes', cfg.get('num_classes')) != cfg.get('num_classes'):
        heads = {f'{h}.{p}' for h in _names(cfg.get('classifier')) for p in ('weight', 'bias')}
    source_chans = (cfg.get('input_size') or (3,))[0]
    adapt = {}
    for name in _names(cfg.get('first_conv')):
        chans = getattr(model.get_submodule(name), 'in_channels', source_chans)
        if chans != source_chans:
            adapt[f'{name}.weight'] = chans
    return heads, adapt


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def pretrained_filter(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` (its own loader, for Hugging Face Hub weights): :func:`fit`, leaving to timm
    the classifier and first conv it adapts afterwards."""
    heads, adapt = _pretrained_optional(model)
    return fit(state_dict, model, optional=heads | set(adapt))


# ---------------------------------------------------------------------------------------------------------------
# Reading and loading


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else ''
    return text if isinstance(err, ValueError) and text else f'{type(err).__name__}: {text}'.rstrip(': ')


def _numpy_globals() -> list[Any]:
    """numpy types that appear in pickled scalars/arrays (numpy 1.x and 2.x module paths)."""
    found: list[Any] = [np.ndarray, np.dtype]
    for path in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            module = __import__(path, fromlist=['_reconstruct', 'scalar'])
        except ImportError:
            continue
        found += [module._reconstruct, module.scalar]
    # Concrete dtype classes (numpy >= 1.25 pickles dtypes through numpy.dtypes.*DType).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    found += [np.float64, np.float32, np.int64, np.int32, np.bool_]
    return found


@contextlib.contextmanager
def checkpoint_safe_globals(extra: Collection[Any] = ()) -> Iterator[None]:
    """Allow-list, for ``torch.load(weights_only=True)``, what training checkpoints hold besides tensors (the
    ``args`` Namespace, numpy scalars, ordered dicts) plus ``extra``; loading keeps torch's safe unpickler.

    Only entries not yet allowed are added (torch's context removes its whole list on exit, so re-adding present
    ones would strip them from an enclosing block).
    """
    present = torch.serialization.get_safe_globals()
    wanted = [*_numpy_globals(), argparse.Namespace, collections.OrderedDict, collections.defaultdict, *extra]
    with torch.serialization.safe_globals([g for g in wanted if g not in present]):
        yield


HF_HUB_PREFIX = 'hf-hub:'


def read_checkpoint(source: str | os.PathLike, model: torch.nn.Module | str | None = None) -> dict[str, Any]:
    """What a weights file holds, as a dict (a state dict, or a checkpoint wrapping one or two).

    ``source``: a local path, an http(s) URL (downloaded once into timm's cache) or ``hf-hub:<repo id>`` (timm's
    notation: the repo's weights through timm's Hub loader, safetensors first). ``model`` (a model or a registered
    name) selects its family's reader for local files and URLs, where the family has one (MOAT: TF1 checkpoints).
    A torch file is read in ``weights_only`` mode (:func:`checkpoint_safe_globals`). Raises ``RuntimeError`` for a
    file that cannot be read (missing, truncated, not a torch file, a pickled object that is not allow-listed) and
    ``ValueError`` for one that holds something else than a dict; a family reader's errors pass through.
    """
    source = str(source)
    if source.startswith(HF_HUB_PREFIX):
        from timm.models import load_state_dict_from_hf

        try:
            return load_state_dict_from_hf(source[len(HF_HUB_PREFIX):])
        except Exception as e:  # no such repo / no network / unreadable file
            raise RuntimeError(f'cannot read checkpoint {source}: {_first_line(e)}') from None
    path = source
    if urlparse(source).scheme in ('http', 'https', 'file'):
        from timm.models._hub import download_cached_file

        path = download_cached_file(source, check_hash=False, progress=True)
    family = family_of(model) if model is not None else None
    if family is not None and family.read_weights is not None:
        return family.read_weights(path)
    try:
        with checkpoint_safe_globals():
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # missing, corrupt/truncated zip, pickle garbage, foreign formats
        raise RuntimeError(f'cannot read checkpoint {path}: {_first_line(e)}') from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f'checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict')
    return checkpoint


HEAD_MODES = ('strict', 'adapt', 'new')


def load_weights(model: torch.nn.Module, source: str | os.PathLike | Mapping[str, Any], use_ema: bool | None = None,
                 head: str = 'strict') -> None:
    """Load the weights of ``source`` (a path or URL for :func:`read_checkpoint`, or what it returned) into ``model``
    through :func:`fit`.

    ``use_ema``: the checkpoint's EMA (True) or raw (False) weights, by default the family's choice. ``head``:
    ``'strict'`` every weight must fit; ``'adapt'`` timm's rule for pretrained weights: the classifier is left at its
    init when ``num_classes`` differs from the pretrained cfg's, the first conv adapted to ``in_chans``; ``'new'``
    (fine-tuning) a checkpoint classifier of another shape is left out, the model keeps its own.
    """
    if head not in HEAD_MODES:
        raise ValueError(f'head must be one of {HEAD_MODES}, got {head!r}')
    checkpoint = source if isinstance(source, Mapping) else read_checkpoint(source, model)
    if head == 'adapt':
        heads, adapt = _pretrained_optional(model)
        state_dict = fit(checkpoint, model, use_ema, optional=heads | set(adapt))
        for key, chans in adapt.items():
            state_dict[key] = adapt_input_conv(chans, state_dict[key])
    elif head == 'new':
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        classifier = _names(cfg.get('classifier')) or getattr(type(model), 'checkpoint_layout', Layout()).classifier
        heads = {f'{c}.{p}' for c in classifier for p in ('weight', 'bias')}
        state_dict = fit(checkpoint, model, use_ema, optional=heads)
        own = model.state_dict()
        heads = {k for k in heads if k not in state_dict or k not in own or state_dict[k].shape != own[k].shape}
    else:
        heads, state_dict = set(), fit(checkpoint, model, use_ema)
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in heads}, strict=not heads)


class PretrainedMixin:
    """``model.load_pretrained(path)``, which timm's ``pretrained=True`` calls for a cfg with ``custom_load``: the
    zoo's loader (:func:`load_weights`, ``head='adapt'``) instead of timm's, so a release file is read like any
    other (full training checkpoints, the family's EMA choice and reader)."""

    def load_pretrained(self, path: str, use_ema: bool | None = None) -> None:
        name = model_name(self)
        try:
            load_weights(self, path, use_ema, head='adapt')
        except (RuntimeError, OSError) as e:
            raise type(e)(f'{name}: {e} (a broken download? delete the file to fetch it again)') from None
        except ValueError as e:
            raise ValueError(f'{name}: pretrained weights {path} do not fit: {e}') from None
