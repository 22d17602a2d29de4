"""One way to read weights, shared by validate.py / train.py, ``pretrained=True`` and the downstream backbone.

* :func:`unwrap_state_dict`: the weights inside a checkpoint file. A file may hold raw weights (``state_dict`` /
  ``model``), EMA weights (``state_dict_ema`` / ``model_ema``), both, or be a plain state dict. ``use_ema`` chooses
  explicitly; by default the family decides (:func:`ema_first`), because the weights the authors' table was measured
  with differ between releases.
* :func:`checkpoint_filter`: a family's ``checkpoint_filter_fn``, found by one rule (timm's): the module of the
  model's registered entrypoint.
* :func:`mismatch_report`: the one-line report of how a state dict fails to fit a model.
* :func:`read_tf_checkpoint`: the variables of a TensorFlow checkpoint as arrays (MOAT's releases), for a family's
  filter to map.
* :func:`fit_state_dict`: all three together, as every loader uses them: the weights as saved when they fit,
  otherwise through the family filter, whose own diagnosis (wrong family, wrong variant) is kept in the error.
* :func:`read_checkpoint`: a torch file read in ``weights_only`` mode with what official training checkpoints also
  hold (``argparse.Namespace``, numpy scalars) allow-listed (:func:`checkpoint_safe_globals`).
* ``pretrained=True`` for official releases (:func:`release_url`, :func:`load_pretrained`, :class:`PretrainedMixin`):
  timm's URL loader names the cache file after the URL's basename, empty for TsinghuaCloud shares and ``content``
  for every OneDrive one, and reads with plain ``weights_only``; a family's ``_cfg`` gives each release a cache name
  of its own and ``custom_load``, so timm downloads it and calls ``model.load_pretrained(path)``.

A family declares its default with a module-level ``CHECKPOINT_EMA`` next to its ``checkpoint_filter_fn`` (True:
EMA weights first, timm's order, also used for models that declare nothing; False: raw weights first; a set of
variant names: EMA first for those, raw for the others).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from types import ModuleType
from typing import Any

import numpy as np
import timm
import torch
from timm.models import adapt_input_conv, clean_state_dict, model_entrypoint

from ._family import family_of

__all__ = ['EMA_KEYS', 'RAW_KEYS', 'PretrainedMixin', 'checkpoint_filter', 'checkpoint_safe_globals', 'ema_first',
           'filter_by_class', 'fit', 'fit_state_dict', 'in_chans_only', 'load_fitted', 'load_pretrained',
           'mismatch_error', 'mismatch_report', 'model_name', 'read_checkpoint', 'read_tf_checkpoint', 'stage_layout',
           'unwrap_state_dict']

EMA_KEYS = ('state_dict_ema', 'model_ema')
RAW_KEYS = ('state_dict', 'model')


def _architecture(model: torch.nn.Module) -> str | None:
    return (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')


def model_name(model: torch.nn.Module) -> str:
    """The registered name of a model built by ``timm.create_model`` (its class name otherwise), for messages."""
    return _architecture(model) or type(model).__name__


def stage_layout(state_dict: Mapping[str, Any], **first_block: str | tuple[str, Callable]) -> dict[str, list]:
    """Blocks per stage (``depths``) of a state dict in the zoo layout (``stages.{s}.blocks.{b}.*``) and, per keyword,
    a value read from ``stages.{s}.blocks.0.<suffix>``: its first dim, or ``fn(tensor)`` for ``(suffix, fn)``; None
    where absent. What a filter's mismatch message compares between checkpoint and model.
    """
    depths: dict[int, int] = {}
    for k in state_dict:
        m = re.match(r'^stages\.(\d+)\.blocks\.(\d+)\.', k)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            depths[s] = max(depths.get(s, 0), b + 1)
    stages = sorted(depths)

    def read(s: int, spec: str | tuple[str, Callable]):
        suffix, fn = (spec, lambda t: t.shape[0]) if isinstance(spec, str) else spec
        t = state_dict.get(f'stages.{s}.blocks.0.{suffix}')
        return None if t is None else fn(t)
    layout = dict(depths=[depths[s] for s in stages])
    layout.update({key: [read(s, spec) for s in stages] for key, spec in first_block.items()})
    return layout


def _family_module(model: torch.nn.Module | str) -> ModuleType | None:
    """The module of the registered entrypoint of ``model`` (a name, or a model built by ``timm.create_model``)."""
    name = model if isinstance(model, str) else _architecture(model)
    if not name or not timm.is_model(name):
        return None
    return sys.modules.get(model_entrypoint(name).__module__)


def checkpoint_filter(model: torch.nn.Module | str) -> Callable | None:
    """The family's ``checkpoint_filter_fn(state_dict, model)``, or None when the family has none."""
    return getattr(_family_module(model), 'checkpoint_filter_fn', None)


def weights_reader(model: torch.nn.Module | str) -> Callable[[str, bool | None], dict[str, Any]] | None:
    """The family's ``read_weights(path, use_ema)``, for weight files that are not torch checkpoints (MOAT's TF1
    releases): a state dict in the family's layout, the EMA or raw weights as ``use_ema`` chooses (None: the family's
    default). None when the family reads torch checkpoints only."""
    family = family_of(model)
    return family.read_weights if family else None


def ema_first(model: torch.nn.Module | str) -> bool:
    """Whether the family's default weights are the EMA ones when a checkpoint holds both (timm's order for a model
    of no zoo family)."""
    family = family_of(model)
    return family.ema_first(model if isinstance(model, str) else model_name(model)) if family else True


def fit(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` of every zoo model: ``state_dict`` in ``model``'s layout."""
    filter_fn = checkpoint_filter(model)
    return dict(state_dict) if filter_fn is None else filter_fn(state_dict, model)


def unwrap_state_dict(
        checkpoint: Mapping[str, Any],
        use_ema: bool | None = None,
        prefer_ema: bool = True,
) -> dict[str, torch.Tensor]:
    """The weights of a plain state dict or of a wrapped checkpoint, without DDP's ``module.`` prefix.

    ``use_ema`` True / False takes the EMA / raw entry and raises ``ValueError`` when the file has none; None takes
    the EMA entry first when ``prefer_ema`` (the family default, :func:`ema_first`), else the raw one first.
    Raises ``ValueError`` naming the first entry that is not a tensor (e.g. a wrapper this function does not know).
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


def mismatch_error(name: str, problem: str, have: Mapping[str, Any], want: Mapping[str, Any],
                   labels: Mapping[str, str]) -> ValueError:
    """The checkpoint filters' error: every field of ``labels`` (field -> words) whose summary differs between the
    checkpoint (``have``) and the model (``want``, e.g. :func:`stage_layout`), then :func:`mismatch_report`'s line."""
    diffs = [f'{labels[f]}: checkpoint {have[f]} vs model {want[f]}' for f in labels if have[f] != want[f]]
    return ValueError(f'{name}: checkpoint does not match the model: ' + '; '.join(diffs + [problem]))


def in_chans_only(*first_convs: str) -> Callable[[str, tuple, tuple], bool]:
    """A :func:`mismatch_report` ``shape_ok``: the 4-D weights ``first_convs`` may differ in their input channels
    only (timm's loader adapts a first conv to ``in_chans`` afterwards)."""
    def ok(key: str, have: tuple, want: tuple) -> bool:
        return key in first_convs and len(have) == len(want) == 4 and have[0] == want[0] and have[2:] == want[2:]
    return ok


def mismatch_report(
        expected: Mapping[str, Any],
        state_dict: Mapping[str, Any],
        optional: Collection[str] = (),
        shape_ok: Callable[[str, tuple, tuple], bool] | None = None,
) -> str | None:
    """One line saying how ``state_dict`` fails to fit ``expected`` (name -> tensor), or None when it fits.

    Keys in ``optional`` may be missing, differently shaped or extra (a classifier that is adapted afterwards);
    ``shape_ok(key, have, want)`` may accept other shape differences (e.g. a first conv adapted to ``in_chans``).
    """
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected and k not in optional]
    shapes = []
    for k, v in expected.items():
        if k in state_dict and k not in optional:
            have, want = tuple(getattr(state_dict[k], 'shape', ())), tuple(v.shape)
            if have != want and not (shape_ok and shape_ok(k, have, want)):
                shapes.append(f'{k} {have} vs {want}')

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


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else ''
    return text if isinstance(err, ValueError) and text else f'{type(err).__name__}: {text}'.rstrip(': ')


def fit_state_dict(
        model: torch.nn.Module,
        checkpoint: Mapping[str, Any],
        use_ema: bool | None = None,
        optional: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """The weights of ``checkpoint`` in ``model``'s layout: as saved when they fit, else through the family filter.

    Raises ``ValueError`` with one line: the filter's own diagnosis when it rejects the file (plus how the file
    fails as saved), or the key report of what still does not fit.
    """
    state_dict = unwrap_state_dict(checkpoint, use_ema, prefer_ema=ema_first(model))
    expected = model.state_dict()
    problem = mismatch_report(expected, state_dict, optional)
    if problem is None:
        return state_dict
    filter_fn = checkpoint_filter(model)
    if filter_fn is None:
        raise ValueError(problem)
    where = f'{filter_fn.__module__}.checkpoint_filter_fn'
    try:
        filtered = filter_fn(state_dict, model)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
        raise ValueError(f'{_first_line(e)} ({where}; as saved: {problem})') from None
    problem = mismatch_report(expected, filtered, optional)
    if problem is not None:
        raise ValueError(f'{problem} (after {where})')
    return filtered


def filter_by_class(filters: Mapping[type, Callable]) -> Callable:
    """One ``checkpoint_filter_fn`` for a family built on several skeletons (Agent / InLine: Swin, PVT, DeiT, CSwin):
    the filter of the first class in ``filters`` that the model is an instance of."""
    def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
        for cls, fn in filters.items():
            if isinstance(model, cls):
                return fn(state_dict, model)
        raise TypeError(f'no checkpoint filter for a {type(model).__name__} (this family has filters for '
                        f'{", ".join(c.__name__ for c in filters)})')
    return checkpoint_filter_fn


def _tf_checkpoint_prefix(path: str) -> str:
    """The checkpoint prefix (``<prefix>.index`` exists) of a prefix, or the only one inside a folder."""
    if os.path.isfile(path + '.index'):
        return path
    if os.path.isfile(path) and path.endswith('.index'):
        return path[:-len('.index')]
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, '**', '*.index'), recursive=True))
        if len(found) == 1:
            return found[0][:-len('.index')]
        raise ValueError(f'{path}: expected one TF checkpoint (*.index) inside, found {len(found)}')
    raise FileNotFoundError(f'no TF checkpoint at {path} (neither {path}.index nor a folder or .tar.gz holding one)')


def read_tf_checkpoint(path: str) -> dict[str, Any]:
    """Every variable of a TF (1 or 2) checkpoint as ``{name: numpy array}``.

    ``path``: a checkpoint prefix, a folder holding one checkpoint, or a ``.tar.gz`` of one (the MOAT releases),
    unpacked into a temporary folder. Needs ``tensorflow`` (not a dependency of the zoo; the pure-Python
    ``tensorflow-checkpoint-reader`` 0.2.2 fails on Python 3.11 and numpy 2).
    """
    path = str(path)
    if path.endswith(('.tar.gz', '.tgz', '.tar')):
        with tempfile.TemporaryDirectory() as folder:
            with tarfile.open(path) as tar:
                tar.extractall(folder, filter='data')
            return read_tf_checkpoint(folder)
    prefix = _tf_checkpoint_prefix(path)
    try:
        from tensorflow.train import load_checkpoint
    except ImportError as e:
        raise ImportError(f'reading a TF checkpoint needs tensorflow (pip install tensorflow-cpu): {e}') from None
    reader = load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in sorted(reader.get_variable_to_shape_map())}


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


def read_checkpoint(path: str) -> dict[str, Any]:
    """A torch checkpoint file as a dict, read in ``weights_only`` mode (:func:`checkpoint_safe_globals`).

    Raises ``RuntimeError`` for a file torch cannot read (truncated, not a torch file, a pickled object that is not
    allow-listed) and ``ValueError`` for one that holds something else than a dict.
    """
    try:
        with checkpoint_safe_globals():
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # corrupt/truncated zip, pickle garbage, foreign formats
        raise RuntimeError(f'cannot read checkpoint {path}: {_first_line(e)}') from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f'checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict')
    return checkpoint


def _pretrained_optional(model: torch.nn.Module) -> tuple[set[str], dict[str, int]]:
    """What timm's loader adapts: the classifier keys when ``num_classes`` differs from the cfg's (dropped), and
    the first convs (key -> model's input channels) whose input channels differ from the cfg's (adapted)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    heads: set[str] = set()
    if getattr(model, 'num_classes', cfg.get('num_classes')) != cfg.get('num_classes'):
        names = cfg.get('classifier') or ()
        heads = {f'{h}.{p}' for h in ([names] if isinstance(names, str) else names) for p in ('weight', 'bias')}
    convs = cfg.get('first_conv') or ()
    source_chans = (cfg.get('input_size') or (3,))[0]
    adapt = {}
    for name in [convs] if isinstance(convs, str) else convs:
        chans = getattr(model.get_submodule(name), 'in_channels', source_chans)
        if chans != source_chans:
            adapt[f'{name}.weight'] = chans
    return heads, adapt


def load_fitted(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load weights already in ``model``'s layout as timm's loader would: the first conv adapted to ``in_chans``, the
    classifier left at its init when ``num_classes`` differs from the pretrained cfg's (or is 0); strict otherwise."""
    heads, adapt = _pretrained_optional(model)
    for key, chans in adapt.items():
        if key in state_dict:
            state_dict[key] = adapt_input_conv(chans, state_dict[key])
    state_dict = {k: v for k, v in state_dict.items() if k not in heads}
    model.load_state_dict(state_dict, strict=not heads)


def load_pretrained(model: torch.nn.Module, path: str, use_ema: bool | None = None) -> None:
    """Load an official release (plain weights or a full training checkpoint) or a checkpoint of ours from ``path``
    into ``model``: read safely (:func:`read_checkpoint`, or the family's :func:`weights_reader`), the family's default
    weights unless ``use_ema`` chooses, mapped by the family's filter where needed (:func:`fit_state_dict`), loaded by
    :func:`load_fitted`.

    Raises ``RuntimeError`` (unreadable file: delete it from the cache to download it again) or ``ValueError``
    (weights that do not fit), both naming the model and the file.
    """
    name = model_name(model)
    reader = weights_reader(model)
    try:
        checkpoint = read_checkpoint(path) if reader is None else reader(path, use_ema)
    except (RuntimeError, ValueError, OSError) as e:
        raise type(e)(f'{name}: {e} (a broken download? delete the file to fetch it again)') from None
    if reader is not None:
        use_ema = None  # the reader has chosen
    heads, adapt = _pretrained_optional(model)
    try:
        state_dict = fit_state_dict(model, checkpoint, use_ema=use_ema, optional=heads | set(adapt))
    except ValueError as e:
        raise ValueError(f'{name}: pretrained weights {path} do not fit: {e}') from None
    load_fitted(model, state_dict)


class PretrainedMixin:
    """``model.load_pretrained(path)``, which timm's ``pretrained=True`` calls for a cfg with ``custom_load``."""

    def load_pretrained(self, path: str, use_ema: bool | None = None) -> None:
        load_pretrained(self, path, use_ema)
