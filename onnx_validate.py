#!/usr/bin/env python3
"""Validate an ONNX file in onnxruntime (timm's ``onnx_validate.py``), optionally against the eager zoo model.

With ``--data-dir`` (an image folder, one sub-folder per class, as timm's ``ImageFolder`` reads it) the images go
through timm's eval transform (``--img-size``, ``--crop-pct``, ``--mean``, ``--std``; defaults from ``--model``'s
pretrained cfg where given) and top-1 / top-5 accuracy is printed; without it, ``--num-batches`` batches of seeded
random images (the demo). With ``--model`` (and ``--checkpoint``) each batch also runs in the eager model and the
largest difference to it is printed, relative to the logits' scale.

    python onnx_export.py nat_mini.onnx --model nat_mini --dynamic-size
    python onnx_validate.py --onnx-input nat_mini.onnx --model nat_mini --img-size 192 -b 2
    python onnx_validate.py --onnx-input model.onnx --data-dir /data/imagenet/val --model nat_mini --checkpoint w.pth
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from timm.utils import ParseKwargs

import zoo_common
from zoo_common import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--onnx-input', required=True, metavar='ONNX_FILE', help='the ONNX file to validate')
    parser.add_argument('--data-dir', default=None, metavar='DIR', help='image folder (default: random images)')
    parser.add_argument('--model', '-m', default=None, metavar='NAME', help='eager model to compare against')
    parser.add_argument('--checkpoint', default='', metavar='PATH', help="the eager model's weights")
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='model arguments (k=v)')
    parser.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=None,
                        help="the checkpoint's EMA weights (default: the family's choice)")
    parser.add_argument('--batch-size', '-b', type=int, default=8, metavar='N')
    parser.add_argument('--img-size', type=int, default=None, metavar='N',
                        help="square input size (default: the file's fixed size, the model's, or 224)")
    parser.add_argument('--crop-pct', type=float, default=None, help='eval center-crop fraction')
    parser.add_argument('--mean', type=float, nargs=3, default=None, metavar='M', help='normalisation mean')
    parser.add_argument('--std', type=float, nargs=3, default=None, metavar='S', help='normalisation std')
    parser.add_argument('--num-batches', type=int, default=2, metavar='N', help='random batches without --data-dir')
    parser.add_argument('--workers', '-j', type=int, default=2, metavar='N', help='data-loading workers')
    parser.add_argument('--print-freq', type=int, default=10, metavar='N')
    return parser


def _session(path: str):
    import onnxruntime as ort
    if not Path(path).is_file():
        raise CliError(f'--onnx-input {path}: no such file')
    try:
        return ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    except Exception as e:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise CliError(f'--onnx-input {path}: not a model onnxruntime can load ({zoo_common.first_line(e)})') from None


def _input_size(args: argparse.Namespace, dims: list, model: torch.nn.Module | None) -> tuple[int, int, int]:
    """(channels, height, width) of the inputs, checked against the file's fixed dimensions."""
    fixed = [d if isinstance(d, int) else None for d in dims]
    if len(fixed) != 4:
        raise CliError(f'--onnx-input {args.onnx_input}: expects an image batch [B, C, H, W], its input has shape '
                       f'{dims}')
    if fixed[0] is not None and fixed[0] != args.batch_size:
        raise CliError(f'--batch-size {args.batch_size}: {args.onnx_input} takes batches of {fixed[0]} only')
    cfg_size = model.pretrained_cfg.get('input_size', (3, 224, 224)) if model is not None else (3, 224, 224)
    channels = fixed[1] or cfg_size[0]
    size = args.img_size or fixed[2] or cfg_size[1]
    if size < 1:
        raise CliError(f'--img-size {size}: must be >= 1')
    if (fixed[2] is not None and fixed[2] != size) or (fixed[3] is not None and fixed[3] != size):
        raise CliError(f'--img-size {size}: {args.onnx_input} takes {fixed[2]}x{fixed[3]} inputs only (exported '
                       'without --dynamic-size)')
    return channels, size, size


def _model(args: argparse.Namespace) -> torch.nn.Module | None:
    if args.model is None:
        if args.checkpoint:
            raise CliError('--checkpoint needs --model (the architecture to load it into)')
        return None
    import timm

    import backbones  # noqa: F401  (registers the zoo)
    zoo_common.check_model_name(args.model)
    try:
        model = timm.create_model(args.model, **args.model_kwargs)
    except (RuntimeError, ValueError, TypeError) as e:
        raise CliError(f'--model {args.model}: cannot create it ({zoo_common.first_line(e)})') from None
    if args.checkpoint:
        zoo_common.load_model_weights(model, args.checkpoint, '--checkpoint', use_ema=args.use_ema)
    return model.eval()


def _batches(args: argparse.Namespace, size: tuple[int, int, int], model: torch.nn.Module | None):
    """(images, targets or None) batches: the image folder through timm's eval transform, or random images."""
    if args.data_dir is None:
        gen = torch.Generator().manual_seed(0)
        for _ in range(args.num_batches):
            yield torch.randn(args.batch_size, *size, generator=gen), None
        return
    from timm.data import create_dataset, create_transform, resolve_data_config
    if not Path(args.data_dir).is_dir():
        raise CliError(f'--data-dir {args.data_dir}: no such folder')
    overrides = {k: v for k, v in dict(input_size=size, crop_pct=args.crop_pct, mean=args.mean, std=args.std).items()
                 if v is not None}
    config = resolve_data_config(overrides, model=model)
    dataset = create_dataset('', root=args.data_dir, transform=create_transform(**config, is_training=False))
    if len(dataset) == 0:
        raise CliError(f'--data-dir {args.data_dir}: no images found')
    yield from torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = zoo_common.parse_args(build_parser(), argv)
    if importlib.util.find_spec('onnxruntime') is None:
        raise CliError('needs onnxruntime: pip install onnxruntime (the [onnx] extra)')
    if args.batch_size < 1:
        raise CliError(f'--batch-size {args.batch_size}: must be >= 1')
    session = _session(args.onnx_input)
    model = _model(args)
    inp = session.get_inputs()[0]
    size = _input_size(args, list(inp.shape), model)
    seen = correct1 = correct5 = 0
    worst, run_s = 0.0, 0.0
    for i, (x, target) in enumerate(_batches(args, size, model)):
        start = time.perf_counter()
        try:
            out = torch.from_numpy(session.run(None, {inp.name: x.numpy()})[0])
        except Exception as e:  # noqa: BLE001
            raise CliError(f'{args.onnx_input}: onnxruntime cannot run a {tuple(x.shape)} input '
                           f'({zoo_common.first_line(e)})') from None
        run_s += time.perf_counter() - start
        seen += x.shape[0]
        if model is not None:
            with torch.inference_mode():
                ref = model(x)
            if ref.shape != out.shape:
                raise CliError(f'--model {args.model}: output {tuple(ref.shape)}, the file\'s {tuple(out.shape)}: not '
                               'the same model')
            worst = max(worst, float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)))
        if target is not None:
            top5 = out.topk(min(5, out.shape[-1]), dim=-1).indices
            correct1 += int((top5[:, 0] == target).sum())
            correct5 += int((top5 == target[:, None]).any(-1).sum())
        if args.print_freq and i % args.print_freq == 0:
            print(f'batch {i}: {seen} images, {run_s / seen * 1e3:.1f} ms/image', flush=True)
    result: dict[str, Any] = {'images': seen, 'input_size': list(size), 'ms_per_image': run_s / max(seen, 1) * 1e3}
    summary = f'{args.onnx_input}: {seen} images at {size[1]}x{size[2]}, {result["ms_per_image"]:.1f} ms/image'
    if args.data_dir is not None:
        result.update(top1=100 * correct1 / seen, top5=100 * correct5 / seen)
        summary += f', top-1 {result["top1"]:.2f}%, top-5 {result["top5"]:.2f}%'
    if model is not None:
        result['max_rel_diff'] = worst
        summary += f', max |onnx - eager| = {worst:.2g} of the logits'
    print(summary)
    return result


if __name__ == '__main__':
    sys.exit(zoo_common.run_cli(main))
