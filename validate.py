#!/usr/bin/env python3
"""Evaluate attnzoo (or any timm) models: top-1/top-5, loss, throughput and peak memory, one CSV row per model.

    python validate.py --model nat_mini --checkpoint output/train/run/model_best.pth.tar --data-dir /data/imagenet
    python validate.py --model 'dinat_*' --pretrained --data-dir /data/imagenet --results-file results.csv
    python validate.py --model nat_mini --checkpoint nat_mini.pth   # an official file, through the model's filter

Resolution, crop and interpolation default to the model's ``pretrained_cfg``. Without ``--data-dir`` the
embedded digits validation split is used.
"""
import argparse
import csv
import io
import logging
import os
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.utils import ParseKwargs

import backbones  # noqa: F401  (registers the zoo's models with timm)
import zoo_common
from zoo_common import CliError

_logger = logging.getLogger('validate')


def build_parser() -> argparse.ArgumentParser:
    """The command line; names and defaults follow timm's validate.py."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-c', '--config', default='', metavar='FILE', help='YAML file of argument defaults')
    parser.add_argument('data', nargs='?', metavar='DIR', help='dataset root (same as --data-dir)')
    parser.add_argument('--data-dir', metavar='DIR', help='dataset root; without it the embedded digits set is used')
    parser.add_argument('--dataset', default='', metavar='NAME', help="timm dataset spec ('' = folder, 'digits')")
    parser.add_argument('--split', default='validation', metavar='NAME')
    parser.add_argument('--num-samples', type=int, default=None, metavar='N', help='evaluate on N samples')
    parser.add_argument('--class-map', default='', metavar='FILE')
    parser.add_argument('--model', '-m', default=zoo_common.DEFAULT_MODEL, metavar='NAME',
                        help="a model name, a comma-separated list, or a wildcard such as 'nat_*' (default: "
                             f"{zoo_common.DEFAULT_MODEL}, the smallest zoo model)")
    parser.add_argument('--pretrained', action='store_true', help="use each model's pretrained weights")
    parser.add_argument('--checkpoint', default='', metavar='PATH',
                        help='weights to evaluate: a train.py checkpoint or an official file')
    parser.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=None,
                        help="evaluate the checkpoint's EMA weights (--no-use-ema: its raw weights); default: the "
                             "model family's default weights (backbones.checkpoint)")
    parser.add_argument('--num-classes', type=int, default=None, help='default: from the dataset')
    parser.add_argument('--gp', default=None, metavar='POOL')
    parser.add_argument('--img-size', type=int, default=None, metavar='N')
    parser.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N')
    parser.add_argument('--crop-pct', default=None, type=float)
    parser.add_argument('--crop-mode', default=None, choices=('center', 'squash', 'border'))
    parser.add_argument('--mean', type=float, nargs='+', default=None)
    parser.add_argument('--std', type=float, nargs='+', default=None)
    parser.add_argument('--interpolation', default='', metavar='NAME')
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    parser.add_argument('-b', '--batch-size', type=int, default=256, metavar='N')
    parser.add_argument('-j', '--workers', type=int, default=zoo_common.default_workers(), metavar='N',
                        help='data loading processes (default: up to 4, no more than the cores)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'))
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--torchcompile', '--torch-compile', dest='torchcompile', nargs='?', default=None,
                        const='inductor', metavar='BACKEND', help='torch.compile the model (default backend inductor)')
    parser.add_argument('--torchcompile-mode', default=None, metavar='MODE', help='torch.compile mode')
    parser.add_argument('--test-pool', action='store_true',
                        help="timm's test-time pooling when the input is larger than the model's pretrained_cfg "
                             "size (models whose head is pooling + a linear classifier)")
    parser.add_argument('--retry', action='store_true', help='on out-of-memory, halve the batch size and retry')
    parser.add_argument('--log-freq', type=int, default=10, metavar='N',
                        help='log a line every N batches when stdout is not a terminal (else a progress bar)')
    parser.add_argument('--results-file', default='', metavar='FILE', help='write one CSV row per model here')
    return parser


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == 'darwin' else 2 ** 10)


def resolve_models(spec: str, pretrained: bool) -> list[str]:
    """Model names from a name, comma-separated names, or wildcards (``timm.list_models`` patterns)."""
    names = []
    for part in (p.strip() for p in spec.split(',') if p.strip()):
        if any(c in part for c in '*?['):
            matched = timm.list_models(part, pretrained=pretrained)
            if not matched:
                raise CliError(f"--model {part}: no registered model matches")
            names.extend(matched)
        else:
            zoo_common.check_model_name(part.split('.')[0])
            names.append(part)
    if not names:
        raise CliError('--model: no model given')
    return list(dict.fromkeys(names))


def apply_test_pool(model: torch.nn.Module, data_config: dict[str, Any], name: str) -> tuple[torch.nn.Module, bool]:
    """timm's test-time pooling (``apply_test_time_pool``): above the pretrained_cfg size the classifier runs as a
    1x1 conv over ``pool_size`` windows of the unpooled features, then the scores are averaged.

    Needs a head that is global pooling + a linear classifier (a head that normalises or projects after pooling,
    such as MaxViT's, would be skipped): anything else is a :class:`CliError`. Returns (model, applied).
    """
    from timm.layers import ClassifierHead, apply_test_time_pool

    classifier = model.get_classifier() if hasattr(model, 'get_classifier') else None
    head = getattr(model, 'head', classifier)
    if not isinstance(classifier, torch.nn.Linear) or not (head is classifier or isinstance(head, ClassifierHead)):
        raise CliError(f'--test-pool: {name} does not support test-time pooling (its head is not global pooling + '
                       'a linear classifier)')
    return apply_test_time_pool(model, data_config)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or 'out of memory' in str(err).lower()


def validate_model(name: str, args: argparse.Namespace, device: torch.device, num_classes: int | None,
                   dataset: torch.utils.data.Dataset) -> dict[str, Any]:
    """Evaluate one model; returns its CSV row. With ``--retry`` an out-of-memory error halves the batch size."""
    batch_size = args.batch_size
    while True:
        try:
            return _validate_model(name, args, device, num_classes, dataset, batch_size)
        except RuntimeError as e:
            if not args.retry or not _is_oom(e) or batch_size <= 1:
                raise
            if device.type == 'cuda':
                torch.cuda.empty_cache()
            batch_size = max(1, batch_size // 2)
            _logger.warning(f'{name}: out of memory, retrying with batch size {batch_size}')


def _validate_model(name: str, args: argparse.Namespace, device: torch.device, num_classes: int | None,
                    dataset: torch.utils.data.Dataset, batch_size: int) -> dict[str, Any]:
    kwargs = dict(args.model_kwargs)
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    if args.gp:
        kwargs['global_pool'] = args.gp
    try:
        model = timm.create_model(name, pretrained=args.pretrained, **kwargs)
    except (RuntimeError, ValueError, TypeError, OSError) as e:
        raise CliError(f'--model {name}: cannot create it ({zoo_common.first_line(e)})') from None
    if args.checkpoint:
        zoo_common.load_model_weights(model, args.checkpoint, '--checkpoint', use_ema=args.use_ema)
    data_config = resolve_data_config(vars(args), model=model)
    test_time_pool = False
    if args.test_pool:
        model, test_time_pool = apply_test_pool(model, data_config, name)
    dataset.transform = create_transform(**data_config)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=args.workers, pin_memory=device.type == 'cuda')

    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile, mode=args.torchcompile_mode)
    amp_ctx = zoo_common.amp_context(args.amp, args.amp_dtype, device.type)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    loss_sum, top1, top5, count = zoo_common.evaluate_sums(
        model, loader, device, amp_ctx, args.channels_last, name, log_freq=args.log_freq)
    elapsed = time.perf_counter() - start
    if device.type == 'cuda':
        peak_mb, peak_kind = torch.cuda.max_memory_allocated(device) / 2 ** 20, 'cuda_max_allocated'
    else:
        peak_mb, peak_kind = _peak_rss_mb(), 'process_peak_rss'
    return {
        'model': name,
        'top1': 100. * top1 / count,
        'top5': 100. * top5 / count,
        'loss': loss_sum / count,
        'img_per_s': round(count / elapsed, 2),
        'peak_mem_mb': round(peak_mb, 1),
        'peak_mem_kind': peak_kind,
        'param_count_m': round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        'img_size': data_config['input_size'][-1],
        'crop_pct': data_config['crop_pct'],
        'interpolation': data_config['interpolation'],
        'samples': int(count),
        'batch_size': batch_size,
        'test_time_pool': test_time_pool,
        'device': device.type,
    }


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    zoo_common.atomic_write_text(path, buf.getvalue())


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Evaluate every requested model; returns the result rows."""
    args = zoo_common.parse_args(build_parser(), argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout, force=True)
    if args.data and not args.data_dir:
        args.data_dir = args.data
    names = resolve_models(args.model, args.pretrained)
    if args.checkpoint and len(names) > 1:
        raise CliError(f'--checkpoint holds one model\'s weights but --model {args.model} names {len(names)} models')
    if args.checkpoint:
        zoo_common.check_weights_file(names[0], args.checkpoint, '--checkpoint')  # fail before loading data
    if args.results_file:
        folder = os.path.dirname(os.path.abspath(args.results_file))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise CliError(f'--results-file {args.results_file}: folder {folder} is missing or not writable')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise CliError('--device cuda: CUDA is not available (use --device cpu)')
    if zoo_common.is_embedded(args.dataset, args.data_dir) and args.img_size is None and args.input_size is None:
        args.img_size = zoo_common.EMBEDDED_IMG_SIZE
    dataset = zoo_common.create_dataset(
        args.dataset, args.data_dir, args.split, num_samples=args.num_samples, class_map=args.class_map or None)
    num_classes = args.num_classes or zoo_common.dataset_num_classes(dataset)

    rows = []
    for name in names:
        try:
            row = validate_model(name, args, device, num_classes, dataset)
        except CliError as e:
            if len(names) == 1:
                raise
            _logger.error(f'{name}: skipped ({e})')
            row = {'model': name, 'error': str(e)}
        else:
            _logger.info(
                f"{name}: top-1 {row['top1']:.2f}  top-5 {row['top5']:.2f}  loss {row['loss']:.4f}  "
                f"{row['img_per_s']:.0f} img/s  peak {row['peak_mem_mb']:.0f} MB ({row['peak_mem_kind']})  "
                f"at {row['img_size']}px on {row['samples']} images")
        rows.append(row)
        if args.results_file:
            _write_csv(args.results_file, rows)
    return rows


if __name__ == '__main__':
    sys.exit(zoo_common.run_cli(main))
