"""Pieces shared by train.py and validate.py.

- the embedded default dataset (real images shipped inside an installed package, nothing downloaded),
- dataset creation that falls back to it when no ``--data-dir`` is given,
- checkpoint reading with one-line errors for missing, corrupt and mismatched files,
- ``--config`` YAML handling and the one-line error convention of the scripts.
"""
import argparse
import os
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

EMBEDDED_DATASET = 'digits'
DEFAULT_MODEL = 'tiny_moat_0_no_pe'  # the smallest zoo model (tests/test_foundation.py checks it stays so)
EMBEDDED_IMG_SIZE = 32
_VAL_SPLITS = ('val', 'validation', 'eval', 'evaluation', 'test')


class CliError(Exception):
    """A problem with the user's input: the scripts print it as one line and exit with status 2."""


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main``; a :class:`CliError` becomes ``prog: error: message`` on stderr and exit status 2."""
    try:
        main(argv)
    except CliError as e:
        prog = os.path.basename(sys.argv[0]) if main.__module__ == '__main__' else f'{main.__module__}.py'
        rank = os.environ.get('RANK')
        where = f' [rank {rank}]' if rank is not None and int(os.environ.get('WORLD_SIZE', '1')) > 1 else ''
        print(f'{prog}{where}: error: {e}', file=sys.stderr, flush=True)
        return 2
    return 0


def default_workers(limit: int = 4) -> int:
    """Data-loading workers per process: timm's 4, but no more than this process's share of the usable cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    per_process = cores // max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1')))
    return max(1, min(limit, per_process))


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception message, prefixed by its type when the message is empty."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with defaults taken from a ``-c/--config`` YAML file; the command line wins over the file.

    Keys are the argument names with ``_`` (``drop_path: 0.2``); an unknown key is an error rather than ignored,
    so a typo in a recipe cannot silently train something else.
    """
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='', metavar='FILE')
    config_args, remaining = config_parser.parse_known_args(argv)
    if config_args.config:
        try:
            with open(config_args.config) as f:
                cfg = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CliError(f'--config {config_args.config}: cannot read ({first_line(e)})') from None
        if not isinstance(cfg, dict):
            raise CliError(f'--config {config_args.config}: expected a mapping of argument names to values')
        known = {action.dest for action in parser._actions}
        unknown = sorted(k for k in cfg if k not in known)
        if unknown:
            raise CliError(f'--config {config_args.config}: unknown keys {", ".join(unknown)}')
        parser.set_defaults(**cfg)
    args = parser.parse_args(remaining)
    for action in parser._actions:  # values from --config bypass argparse's own choices check
        value = getattr(args, action.dest, None)
        if action.choices is not None and value is not None and value not in action.choices:
            raise CliError(f'--config {config_args.config}: {action.dest}={value!r} is not one of '
                           f'{", ".join(map(str, action.choices))}')
    args.config = config_args.config
    return args


class EmbeddedDigits(torch.utils.data.Dataset):
    """scikit-learn's bundled handwritten digits (UCI ML, 1797 real 8x8 scans, 10 classes) as a timm dataset.

    Images are upsampled to 32x32 RGB PIL images so timm's transforms apply unchanged. The split is fixed and
    stratified: after a seeded shuffle within each class, every fifth image is validation (364 val, 1433 train).
    Like timm's ``ImageDataset`` it holds a settable ``transform`` (``create_loader`` assigns it).
    """

    num_classes = 10

    def __init__(self, split: str = 'train', transform: Callable | None = None):
        from sklearn.datasets import load_digits  # ships the images inside the installed package

        split = split.lower()
        if split != 'train' and split not in _VAL_SPLITS:
            raise CliError(f"split '{split}' does not exist in the embedded dataset (use 'train' or 'validation')")
        digits = load_digits()
        targets = digits.target.astype(np.int64)
        rng = np.random.RandomState(0)
        is_val = np.zeros(len(targets), dtype=bool)
        for c in range(self.num_classes):
            idx = np.flatnonzero(targets == c)
            rng.shuffle(idx)
            is_val[idx[::5]] = True
        keep = np.flatnonzero(is_val if split in _VAL_SPLITS else ~is_val)
        pixels = (digits.images[keep] * (255.0 / 16.0)).round().astype(np.uint8)
        size = (EMBEDDED_IMG_SIZE, EMBEDDED_IMG_SIZE)
        self.images = [Image.fromarray(p).resize(size, Image.BICUBIC).convert('RGB') for p in pixels]
        self.targets = targets[keep].tolist()
        self.indices = keep.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        """A stable name for sample ``index`` (its position in sklearn's digits array), like timm's datasets."""
        return f'digits_{self.indices[index]:04d}.png'


def is_embedded(dataset: str, data_dir: str | None) -> bool:
    """True when the scripts should use the embedded dataset: asked for by name, or no data source at all."""
    return dataset == EMBEDDED_DATASET or (not dataset and not data_dir)


def create_dataset(
        dataset: str,
        data_dir: str | None,
        split: str,
        is_training: bool = False,
        num_samples: int | None = None,
        **kwargs: Any,
) -> torch.utils.data.Dataset:
    """timm's ``create_dataset`` with the embedded default and one-line errors for unusable data locations.

    ``kwargs`` go to ``timm.data.create_dataset`` (``class_map``, ``download``, ``batch_size``, ...).
    """
    from timm.data import create_dataset as timm_create_dataset

    if is_embedded(dataset, data_dir):
        ds = EmbeddedDigits(split)
    else:
        if data_dir and not os.path.isdir(data_dir):
            raise CliError(f'--data-dir {data_dir}: no such directory')
        try:
            ds = timm_create_dataset(
                dataset, root=data_dir, split=split, is_training=is_training, num_samples=num_samples, **kwargs)
        except (RuntimeError, OSError, ValueError, AssertionError) as e:
            raise CliError(f"--data-dir {data_dir} (split '{split}'): {first_line(e)}") from None
        if not isinstance(ds, torch.utils.data.IterableDataset) and len(ds) == 0:
            raise CliError(f"--data-dir {data_dir} (split '{split}'): no images found")
    if num_samples is not None and not isinstance(ds, torch.utils.data.IterableDataset) and len(ds) > num_samples:
        ds = _Subset(ds, num_samples)
    return ds


class _Subset(torch.utils.data.Dataset):
    """``n`` evenly spaced samples of a map-style dataset (so every class of a sorted folder is kept).

    Forwards ``transform`` so timm's ``create_loader`` can set it on the wrapped dataset.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, n: int):
        self.dataset = dataset
        self.n = n
        self.indices = [i * len(dataset) // n for i in range(n)]

    @property
    def transform(self) -> Callable | None:
        return self.dataset.transform

    @transform.setter
    def transform(self, value: Callable | None) -> None:
        self.dataset.transform = value

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]


def dataset_num_classes(ds: torch.utils.data.Dataset) -> int | None:
    """Number of classes a dataset declares (embedded dataset, or a folder reader's class map), else None."""
    ds = getattr(ds, 'dataset', ds)
    if isinstance(ds, EmbeddedDigits):
        return ds.num_classes
    class_to_idx = getattr(getattr(ds, 'reader', None), 'class_to_idx', None)
    return len(class_to_idx) if class_to_idx else None


def read_checkpoint(path: str, what: str, model: torch.nn.Module | str | None = None) -> dict[str, Any]:
    """What the weights or training checkpoint ``path`` holds (:func:`backbones.checkpoint.read_checkpoint`, the
    zoo's one reader; ``model``: a model or name whose family reads its own formats); unreadable files raise
    :class:`CliError`."""
    from backbones.checkpoint import read_checkpoint as read

    if not os.path.exists(path) and not os.path.isfile(path + '.index'):  # a TF checkpoint prefix (MOAT)
        raise CliError(f'{what} {path}: no such file')
    try:
        return read(path, model)
    except ImportError as e:
        raise CliError(f'{what} {path}: {e}') from None
    except (RuntimeError, ValueError, OSError) as e:
        raise CliError(f'{what} {path}: not a readable checkpoint ({first_line(e)})') from None


def state_dict_mismatch(
        model: torch.nn.Module,
        state_dict: dict[str, Any],
        optional: Collection[str] = (),
) -> str | None:
    """Describe in one line how ``state_dict`` fails to fit ``model`` strictly, or None when it fits.

    Keys in ``optional`` may be missing or differently shaped (a classifier that fine-tuning replaces). The report is
    :func:`backbones.checkpoint.mismatch_report`, the one every loader of the zoo uses.
    """
    from backbones.checkpoint import mismatch_report

    return mismatch_report(model.state_dict(), state_dict, optional)


def check_weights_file(model_name: str, path: str, what: str) -> None:
    """Fail early (a :class:`CliError`) on weights ``model_name`` cannot read: a torch checkpoint is read; a family
    that reads its own formats (:attr:`backbones._family.Family.read_weights`: MOAT's TF1 releases) needs the path to
    exist (a file, a folder or a TF checkpoint prefix) and reads it when loading."""
    from backbones import family_of

    family = family_of(model_name)
    if family is None or family.read_weights is None:
        read_checkpoint(path, what)
    elif not (os.path.exists(path) or os.path.isfile(path + '.index')):
        raise CliError(f'{what} {path}: no such file')


def load_model_weights(
        model: torch.nn.Module,
        path: str,
        what: str,
        use_ema: bool | None = None,
        new_classifier: bool = False,
) -> None:
    """Load a checkpoint into ``model`` strictly, in our layout or the family's official one, through the zoo's
    loader (:func:`backbones.checkpoint.load_weights`, as ``pretrained=True`` and the downstream backbone).

    ``use_ema`` True / False takes the checkpoint's EMA / raw weights, None the family's default. A file that does
    not fit raises a :class:`CliError` with the fit's one-line diagnosis. With ``new_classifier`` (fine-tuning) the
    model keeps its freshly initialised classifier when the checkpoint's has another number of classes.
    """
    from backbones.checkpoint import WeightsMismatch, load_weights, unwrap_state_dict

    checkpoint = read_checkpoint(path, what, model)
    flag = {True: '--use-ema', False: '--no-use-ema'}.get(use_ema)
    try:
        unwrap_state_dict(checkpoint, use_ema)
    except ValueError as e:
        raise CliError(f'{flag}: {e} ({what} {path})' if flag else f'{what} {path}: {e}') from None
    try:
        load_weights(model, checkpoint, use_ema, head='new' if new_classifier else 'strict')
    except WeightsMismatch as e:
        raise CliError(f"{what} {path} does not match model '{e.model}': {e.detail}") from None
    except ValueError as e:  # not a checkpoint of the model's family
        raise CliError(f'{what} {path}: {first_line(e)}') from None


def check_model_name(name: str, arg: str = '--model') -> None:
    """Raise a :class:`CliError` (naming ``arg``) with close matches when ``name`` is not a registered model."""
    import difflib

    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f' (did you mean {", ".join(close)}?)' if close else ''
    raise CliError(f'{arg} {name}: unknown model{hint}')


def amp_context(enabled: bool, dtype: str, device_type: str) -> Callable[[], Any]:
    """A factory of autocast contexts (``dtype`` 'float16' or 'bfloat16'), or of null contexts when disabled."""
    if not enabled:
        return nullcontext
    amp_dtype = torch.bfloat16 if dtype == 'bfloat16' else torch.float16
    return lambda: torch.autocast(device_type=device_type, dtype=amp_dtype)


@torch.no_grad()
def evaluate_sums(
        model: torch.nn.Module,
        loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        amp_ctx: Callable[[], Any] = nullcontext,
        channels_last: bool = False,
        desc: str | None = None,
        log_freq: int = 0,
) -> list[float]:
    """Summed cross-entropy, top-1 hits, top-5 hits and sample count of ``model`` over ``loader``.

    Sums (not means) so callers can add them up across processes exactly. ``desc`` shows a progress bar; where tqdm
    is off (stdout is not a terminal) a line with running accuracy is logged every ``log_freq`` batches instead.
    """
    import logging
    import time

    from tqdm import tqdm

    model.eval()
    loss_sum = top1 = top5 = count = 0.
    bar = tqdm(loader, desc=desc, unit='batch', leave=False, dynamic_ncols=True, disable=None if desc else True)
    log_lines = bool(desc) and bar.disable and log_freq > 0
    start = time.perf_counter()
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp_ctx():
            logits = model(x)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction='sum').item()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(y[:, None])
        top1 += hits[:, :1].sum().item()
        top5 += hits.sum().item()
        count += len(y)
        if log_lines and ((i + 1) % log_freq == 0 or i + 1 == len(loader)):
            logging.getLogger('validate').info(
                f'{desc}: [{i + 1:>{len(str(len(loader)))}}/{len(loader)}]  loss {loss_sum / count:.4f}  '
                f'top-1 {100. * top1 / count:.2f}  top-5 {100. * top5 / count:.2f}  '
                f'{count / (time.perf_counter() - start):.0f} img/s')
    return [loss_sum, top1, top5, count]


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
