#!/usr/bin/env python3
"""Draw what a zoo model attends to: the exact attention maps of chosen image positions (``ops.attention_maps``).

    python visualize.py --model biformer_tiny --image chelsea --points 150,120 330,90 --out maps.png
    python visualize.py --model nat_mini --pretrained --image photo.jpg --points 100,80 --stages 0 3
    python visualize.py --model dinat_mini --checkpoint run/model_best.pth.tar --layers 'stages.1.*' -1

``--image`` is a file or the name of one of scikit-image's sample pictures (``chelsea``, ``astronaut``,
``coffee``, ...); ``--points`` are ``x,y`` pixels of that picture. The picture is resized to ``--size`` (default:
the model's pretrained input size) and normalised as the model's pretrained cfg says. One column per layer, one
row per point: the picture, the layer's attention of the query (marked) as a heat map over its key grid
(averaged over heads, or ``--head N``), and in the title the weight on tokens that are not on the map (pooled
tokens beside a local window, a class token, padding). Linear attention's implied weights (RALA, L2ViT, InLine)
can be negative: they are drawn on a signed scale. Default layers: the last attention layer of each stage (the
softmax of layers that also add learnable weights, TransNeXt's ``na_av``).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np
import torch

import zoo_common
from zoo_common import CliError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default=zoo_common.DEFAULT_MODEL, help='a zoo model name')
    p.add_argument('--image', default='chelsea', help="an image file or a scikit-image sample name (default chelsea)")
    p.add_argument('--points', nargs='+', default=None, metavar='X,Y',
                   help='query positions in pixels of the picture (default: its centre)')
    p.add_argument('--out', default='attention_maps.png', help='the figure to write (.png, .jpg, .pdf, .svg)')
    weights = p.add_mutually_exclusive_group()
    weights.add_argument('--pretrained', action='store_true', help="the model's pretrained weights")
    weights.add_argument('--checkpoint', default='', metavar='PATH', help='a train.py checkpoint or an official file')
    p.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=None,
                   help="with --checkpoint: its EMA (--use-ema) or raw weights; default: the family's default")
    p.add_argument('--size', default=None, metavar='H[,W]', help="input size (default: the model's input size)")
    p.add_argument('--stages', nargs='+', type=int, default=None,
                   help="stage indices (model.feature_info order): the last attention layer of each")
    p.add_argument('--layers', nargs='+', default=None,
                   help='layer names / fnmatch patterns / indices in execution order (negative: from the end); '
                        'overrides --stages')
    p.add_argument('--head', type=int, default=None, help='draw one head (default: the mean over heads)')
    p.add_argument('--seed', type=int, default=0, help='initialisation seed without weights (random weights)')
    p.add_argument('--title', default=None, help='figure title (default: the model and its weights)')
    return p


def load_image(spec: str) -> np.ndarray:
    """An RGB uint8 picture ``[H, W, 3]`` from a file or a scikit-image sample name."""
    if os.path.isfile(spec):
        from PIL import Image
        with Image.open(spec) as im:
            return np.asarray(im.convert('RGB'))
    try:
        import skimage.data
    except ImportError:
        raise CliError(f'--image {spec}: not a file, and scikit-image (for its sample pictures) is not installed '
                       f'(pip install scikit-image, or pip install -e .[viz])') from None
    if not callable(getattr(skimage.data, spec, None)) or spec.startswith('_') or spec in ('download_all',):
        raise CliError(f'--image {spec}: neither a file nor a scikit-image sample (e.g. chelsea, astronaut, coffee)')
    img = np.asarray(getattr(skimage.data, spec)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise CliError(f'--image {spec}: not an RGB picture (shape {img.shape})')
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) / max(float(img.max()), 1e-12))).astype(np.uint8)
    return img[..., :3]


def parse_points(values: Sequence[str] | None, width: int, height: int) -> list[tuple[float, float]]:
    if not values:
        return [(width / 2, height / 2)]
    points = []
    for v in values:
        try:
            x, y = (float(c) for c in v.split(','))
        except ValueError:
            raise CliError(f'--points {v}: expected x,y (pixels), e.g. 120,80') from None
        if not (0 <= x < width and 0 <= y < height):
            raise CliError(f'--points {v}: outside the picture (x in [0, {width}), y in [0, {height}))')
        points.append((x, y))
    return points


def parse_size(value: str | None, model) -> tuple[int, int]:
    if value is None:
        return tuple(model.pretrained_cfg.get('input_size', (3, 224, 224))[-2:])
    try:
        sizes = [int(c) for c in value.split(',')]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise CliError(f'--size {value}: expected H or H,W (positive ints)')
    return (sizes[0], sizes[-1])


def build_model(args):
    import timm

    import backbones  # noqa: F401  (registers the zoo)
    zoo_common.check_model_name(args.model)
    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, pretrained=args.pretrained)
    if args.checkpoint:
        zoo_common.load_model_weights(model, args.checkpoint, '--checkpoint', use_ema=args.use_ema)
    return model.eval()


def choose_layers(maps: dict, stages: Sequence[int] | None, layers: Sequence[str] | None) -> dict:
    from ops.maps.model import select_layers
    if layers is not None:
        try:
            return select_layers(maps, [int(v) if v.lstrip('-').isdigit() else v for v in layers])
        except (IndexError, ValueError) as e:
            raise CliError(f'--layers: {e}') from None
    last = {}
    for name, m in maps.items():
        if m.kind != 'na_av':  # TransNeXt's learnable weights added to the local softmax: not the stage's attention
            last[m.stage] = name
    known = sorted(s for s in last if s is not None)
    if stages is not None:
        missing = [s for s in stages if s not in last]
        if missing:
            raise CliError(f'--stages {missing}: no attention layer there; stages with attention: {known}')
        return {last[s]: maps[last[s]] for s in stages}
    return {last[s]: maps[last[s]] for s in (known or [None])}


def _key_map(amap, batch: int, point: int, head: int | None) -> np.ndarray:
    m = amap.maps[batch, point].double()
    if head is not None:
        if not -m.shape[0] <= head < m.shape[0]:
            raise CliError(f'--head {head}: layer {amap.name} has {m.shape[0]} heads')
        m = m[head]
    else:
        m = m.mean(0)
    return m.cpu().numpy()


def _off_map(amap, point: int, head: int | None) -> str:
    parts = []
    for name, t in amap.extra.items():
        t = t[0, point].double()
        t = t[head] if head is not None else t.mean(0)
        parts.append(f'{name} {float(t.sum()):.2f}')
    return ', '.join(parts)


def draw(image: np.ndarray, maps: dict, points: Sequence[tuple[float, float]], head: int | None, title: str, out: str):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    rows, cols = len(points), len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows * h / w + 0.5), squeeze=False)
    for c, (name, amap) in enumerate(maps.items()):
        for r, (x, y) in enumerate(points):
            ax = axes[r, c]
            ax.imshow(image, extent=(0, w, h, 0))
            heat = _key_map(amap, 0, r, head)
            signed = not amap.normalized and heat.min() < 0
            lim = np.abs(heat).max() or 1.0
            ax.imshow(heat, extent=(0, w, h, 0), alpha=0.6, interpolation='nearest',
                      cmap='coolwarm' if signed else 'inferno', vmin=-lim if signed else 0, vmax=lim)
            ax.plot([x], [y], marker='*', markersize=12, color='cyan', markeredgecolor='black')
            extra = _off_map(amap, r, head)
            label = f'{name.split(":")[0]}\n{amap.kind}, keys {"x".join(map(str, amap.key_grid))}'
            ax.set_title(label + (f'\n{extra}' if extra else ''), fontsize=6)
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    """Write the figure; returns the drawn :class:`ops.AttentionMap` records by layer name."""
    args = build_parser().parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise CliError(f'--out {args.out}: folder {folder} does not exist')
    image = load_image(args.image)
    points = parse_points(args.points, image.shape[1], image.shape[0])
    model = build_model(args)
    size = parse_size(args.size, model)

    from timm.data import resolve_data_config

    import ops
    cfg = resolve_data_config({}, model=model)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=size, mode='bilinear', antialias=True, align_corners=False)
    x = (x - torch.tensor(cfg['mean'])[:, None, None]) / torch.tensor(cfg['std'])[:, None, None]
    scaled = [(px * size[1] / image.shape[1], py * size[0] / image.shape[0]) for px, py in points]
    try:
        maps = ops.attention_maps(model, x, scaled)
    except ValueError as e:
        raise CliError(f'--model {args.model}: {e}') from None
    chosen = choose_layers(maps, args.stages, args.layers)
    weights = 'pretrained' if args.pretrained else os.path.basename(args.checkpoint) if args.checkpoint else \
        f'random weights (seed {args.seed})'
    draw(image, chosen, points, args.head, args.title or f'{args.model}, {weights}, input {size[0]}x{size[1]}',
         args.out)
    print(f'{args.out}: {len(chosen)} layers x {len(points)} points ({", ".join(chosen)})')
    return chosen


if __name__ == '__main__':
    sys.exit(zoo_common.run_cli(main))
