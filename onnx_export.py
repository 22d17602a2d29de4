#!/usr/bin/env python3
"""Export a zoo model to ONNX (timm's ``onnx_export.py``, on torch's dynamo exporter).

The attnzoo custom ops lower to default-domain ONNX ops (``ops/*/onnx.py``), so the file runs in onnxruntime (and any
ONNX runtime) without plugins. The batch is always a dynamic axis; ``--dynamic-size`` makes height and width dynamic
too, so one file serves every input size the model accepts. ``--check-forward`` runs the file in onnxruntime and
prints the largest difference to eager PyTorch, at the export size and at another batch (and, with
``--dynamic-size``, another height and width). Bad requests (an unknown model, a size the model cannot take, a
training-mode export with dropout, a model that does not export or specialises a requested dynamic axis) are one
line and exit status 2.

    python onnx_export.py nat_mini.onnx --model nat_mini --dynamic-size --check-forward
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

import torch
from timm.utils import ParseKwargs

import zoo_common
from zoo_common import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('output', metavar='ONNX_FILE', help='output ONNX file')
    parser.add_argument('--model', '-m', default=zoo_common.DEFAULT_MODEL, metavar='NAME', help='model name')
    parser.add_argument('--checkpoint', default='', metavar='PATH', help='weights to load (default: none)')
    parser.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=None,
                        help="the checkpoint's EMA weights (default: the family's choice)")
    parser.add_argument('--pretrained', action='store_true', help="the model's released weights")
    parser.add_argument('--num-classes', type=int, default=None, metavar='N', help='classifier size')
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='model arguments (k=v)')
    parser.add_argument('--img-size', type=int, default=None, metavar='N',
                        help="square input size (default: the model's pretrained input size)")
    parser.add_argument('--batch-size', '-b', type=int, default=1, metavar='N', help='example batch size')
    parser.add_argument('--dynamic-size', action='store_true', help='dynamic height and width (batch always is)')
    parser.add_argument('--opset', type=int, default=18, metavar='N', help='ONNX opset (18 or newer)')
    parser.add_argument('--training', action='store_true', help='export in training mode (no dropout allowed)')
    parser.add_argument('--check-forward', action='store_true', help='run the file in onnxruntime against eager')
    return parser


def _dropouts(model: torch.nn.Module) -> list[str]:
    """Modules whose training-mode output is random: dropout, drop-path, attention dropout above 0."""
    found = []
    for name, module in model.named_modules():
        for attr in ('p', 'drop_prob', 'attn_drop'):
            value = getattr(module, attr, None)
            if isinstance(value, float) and value > 0 and (attr != 'p' or 'Dropout' in type(module).__name__):
                found.append(name or type(module).__name__)
    return found


def _example(model: torch.nn.Module, args: argparse.Namespace) -> torch.Tensor:
    channels, height, width = model.pretrained_cfg.get('input_size', (3, 224, 224))
    if args.img_size is not None:
        if args.img_size < 1:
            raise CliError(f'--img-size {args.img_size}: must be >= 1')
        height = width = args.img_size
    if args.batch_size < 1:
        raise CliError(f'--batch-size {args.batch_size}: must be >= 1')
    return torch.randn(args.batch_size, channels, height, width)


def _max_diff(session, model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |onnx - eager|, that divided by max |eager|)."""
    with torch.no_grad():
        ref = model(x)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    diff = float((got - ref).abs().max())
    return diff, diff / max(float(ref.abs().max()), 1e-30)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = zoo_common.parse_args(build_parser(), argv)
    for package in ('onnxscript', 'onnx') + (('onnxruntime',) if args.check_forward else ()):
        if importlib.util.find_spec(package) is None:
            raise CliError(f'needs {package}: pip install onnx onnxscript onnxruntime (the [onnx] extra)')
    if args.opset < 18:
        raise CliError(f'--opset {args.opset}: the lowerings need opset 18 or newer')
    import timm

    import backbones  # noqa: F401  (registers the zoo)
    zoo_common.check_model_name(args.model)
    kwargs = dict(args.model_kwargs, **({} if args.num_classes is None else {'num_classes': args.num_classes}))
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained, **kwargs)
    except (RuntimeError, ValueError, TypeError, OSError) as e:
        raise CliError(f'--model {args.model}: cannot create it ({zoo_common.first_line(e)})') from None
    if args.checkpoint:
        zoo_common.load_model_weights(model, args.checkpoint, '--checkpoint', use_ema=args.use_ema)
    model.train(args.training)
    if args.training and (random := _dropouts(model)):
        raise CliError(f'--training: {args.model} has dropout / drop-path in training mode ({random[0]}, ...), '
                       'which an exported file cannot reproduce; export in eval mode')
    x = _example(model, args)
    try:
        with torch.no_grad():
            model(x)
    except (ValueError, RuntimeError) as e:
        raise CliError(f'--img-size {x.shape[-1]}: {args.model} cannot take a {tuple(x.shape)} input '
                       f'({zoo_common.first_line(e)})') from None
    axes = {0: 'batch', 2: 'height', 3: 'width'} if args.dynamic_size else {0: 'batch'}
    dynamic = {i: torch.export.Dim.AUTO for i in axes}
    try:
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=(dynamic,),
                                    opset_version=args.opset, input_names=['input'], output_names=['output'],
                                    verbose=False)
    except Exception as e:  # noqa: BLE001  (torch.export / exporter errors have no common base class)
        raise CliError(f'{args.model}: the export failed ({type(e).__name__}: {zoo_common.first_line(e)})') from None
    # Dim.AUTO keeps an axis static where the model's code specialises it: say so rather than write a fixed file
    shape = program.model.graph.inputs[0].shape
    if fixed := [f'{axes[i]} = {shape[i]}' for i in axes if isinstance(shape[i], int)]:
        raise CliError(f'{args.model}: the exported input is fixed at {", ".join(fixed)} (the model specialises '
                       f'it under torch.export); no file written')
    program.save(args.output)
    print(f'{args.model}: wrote {args.output} (opset {args.opset}, dynamic {", ".join(axes.values())})')
    result: dict[str, Any] = {'output': args.output, 'checks': []}
    if args.check_forward:
        import onnxruntime as ort
        session = ort.InferenceSession(args.output, providers=['CPUExecutionProvider'])
        h, w = x.shape[-2:]
        if args.dynamic_size:
            h, w = h - h // 4, w + w // 8
        sizes = [x, torch.randn(x.shape[0] + 1, x.shape[1], h, w)]  # then another batch (and size) from the file
        for inp in sizes:
            diff, rel = _max_diff(session, model, inp)
            result['checks'].append({'shape': list(inp.shape), 'max_abs_diff': diff, 'max_rel_diff': rel})
            print(f'  check-forward {tuple(inp.shape)}: max |onnx - eager| = {diff:.3g} ({rel:.2g} of the logits)')
    return result


if __name__ == '__main__':
    sys.exit(zoo_common.run_cli(main))
