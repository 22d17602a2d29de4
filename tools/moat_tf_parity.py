"""Run deeplab2's TensorFlow MOAT next to ours: write the CI parity fixture, or check a full-size variant.

TensorFlow and torch live in different environments, so this runs in two steps that share a ``.npz`` file:

1. ``tf``: with a Python that has tensorflow and tf_keras (never the zoo's venv), build deeplab2's MOAT
   (``model/pixel_encoder/moat.py`` of a checkout given by ``--deeplab2``) at random init, perturb every variable
   (kernels ~ N(0, 1/fan_in), norms and biases off their init, BatchNorm statistics moved, relative position tables
   large enough to matter; values rounded to fp16 so the fixture stores them exactly), run it in inference mode
   on fixed inputs and save the variables under their TF1 checkpoint names (``moat/stem/...``,
   ``moat/block_{SS}_{BB}/...``), with the values used as the ``/ExponentialMovingAverage`` copies and different raw
   values, next to the inputs and logits.
2. ``torch``: with the zoo's venv, load those variables through ``moat.from_tf`` + ``checkpoint.fit``
   (which must pick the EMA copies) into our model of the same configuration, compare the logits, and with
   ``--write`` save the CI fixture (``tests/data/moat_official.pt``, read by ``tests/test_moat.py``).

Shims (here only): deeplab2 is imported from the checkout as the ``deeplab2`` package; Keras 2 (``tf_keras``,
``TF_USE_LEGACY_KERAS=1``) for ``tf.keras.layers.experimental.SyncBatchNormalization``; and deeplab2's ``Attention``
expands its relative position table into the attention bias once, in ``build`` (correct inside a traced graph,
stale in eager mode once the variables are reassigned), so after setting the weights this script recomputes that
bias with deeplab2's own ``reindex_2d_einsum_lookup`` exactly as ``build`` does.

Usage (from the attnzoo root)::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf-keras pyyaml absl-py
    git clone https://github.com/google-research/deeplab2 /tmp/deeplab2
    /tmp/tfvenv/bin/python tools/moat_tf_parity.py tf --deeplab2 /tmp/deeplab2 --out /tmp/moat_p2.npz
    /tmp/tfvenv/bin/python tools/moat_tf_parity.py tf --deeplab2 /tmp/deeplab2 --pool-size 3 --out /tmp/moat_p3.npz
    PYTHONPATH=. python tools/moat_tf_parity.py torch --npz /tmp/moat_p2.npz /tmp/moat_p3.npz \
        --write tests/data/moat_official.pt
    /tmp/tfvenv/bin/python tools/moat_tf_parity.py tf --deeplab2 /tmp/deeplab2 --full tiny_moat_0 --out /tmp/t0.npz
    PYTHONPATH=. python tools/moat_tf_parity.py torch --npz /tmp/t0.npz
    # the names/shapes listing of tests/data/moat_tf_variables.json: add --names tests/data/moat_tf_variables.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SEED = 0
EMA = '/ExponentialMovingAverage'
# The fixture: tiny-MOAT-0's design with 1-2 blocks per stage, narrow widths and heads of 16 (2 and 3 per stage) to
# keep the file small, 10 classes.
FIXTURE_CFG = dict(stem_size=[8, 8], block_type=['mbconv', 'mbconv', 'moat', 'moat'], num_blocks=[1, 1, 2, 1],
                   hidden_size=[8, 16, 32, 48], head_size=16, build_classification_head_with_class_num=10)
FIXTURE_SIZES = ((64, 64), (72, 56))  # stage-3 maps 4x4 and 5x4: the 27x27 table resized (down) as deeplab2 does
# --full: our name -> (deeplab2's name, input sizes); 224 exercises the table resize at stage 3 (14 -> 16 is 256's)
FULL = dict(tiny_moat_0=('tiny_moat0_pretrain_256_1k', [256, 224]),
            tiny_moat_0_no_pe=('tiny_moat0_pretrain_256_no_pe_1k', [256]))


def fixture_inputs(sizes) -> dict[str, np.ndarray]:
    """Fixed NCHW inputs, one per size (numpy: the TF environment has no torch; fp16 values, stored exactly)."""
    rng = np.random.default_rng(SEED)
    return {f'{h}x{w}': rng.standard_normal((1, 3, h, w)).astype(np.float16).astype(np.float32) for h, w in sizes}


# ------------------------------------------------------------------------------------------------------------------
# step 1: TensorFlow

def _import_deeplab2(root: Path):
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
    parent = root.resolve().parent
    if root.resolve().name != 'deeplab2':  # the code imports itself as `deeplab2.*`
        parent = Path(tempfile.mkdtemp())
        (parent / 'deeplab2').symlink_to(root.resolve())
    sys.path.insert(0, str(parent))
    from deeplab2.model.layers import moat_attention
    from deeplab2.model.pixel_encoder import moat

    build = moat_attention.Attention.build

    def recording_build(self, input_shape):  # remember the map size the bias is built for
        self._bias_size = tuple(input_shape.as_list()[-3:-1])
        build(self, input_shape)

    moat_attention.Attention.build = recording_build
    return moat, moat_attention


def _refresh_relative_bias(model, moat_attention, tf) -> None:
    """deeplab2's Attention.build bias computation, redone from the current table (see the module docstring)."""
    for layer in model.submodules:
        if isinstance(layer, moat_attention.Attention) and layer.reindexed_position_embedding is not None:
            height, width = layer._bias_size
            table = layer.relative_position_embedding
            if layer._config.scale_ratio is not None:
                table = tf.squeeze(tf.image.resize(tf.expand_dims(table, -1), [2 * height - 1, 2 * width - 1]), -1)
            layer.reindexed_position_embedding = moat_attention.reindex_2d_einsum_lookup(
                table, height, width, height - 1, width - 1, h_axis=1)


def _perturbed(name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    leaf = name.rsplit('/', 1)[-1]
    if leaf == 'gamma':
        v = 1 + 0.2 * rng.standard_normal(shape)
    elif leaf in ('beta', 'bias'):
        v = 0.1 * rng.standard_normal(shape)
    elif leaf == 'moving_mean':
        v = 0.1 * rng.standard_normal(shape)
    elif leaf == 'moving_variance':
        v = 0.5 + rng.random(shape)
    elif leaf == 'relative_position_embedding':
        v = 0.5 * rng.standard_normal(shape)
    else:  # conv / depthwise / dense kernels: unit-variance outputs
        fan_in = shape[0] * shape[1] if leaf == 'depthwise_kernel' else int(np.prod(shape[:-1]))
        if name.endswith('/o/weight'):
            fan_in = shape[0] * shape[1]
        elif name.endswith(('/q/weight', '/k/weight', '/v/weight')):
            fan_in = shape[0]
        v = rng.standard_normal(shape) / np.sqrt(fan_in)
    return v.astype(np.float16).astype(np.float32)  # exactly representable in the fp16 fixture


def _checkpoint_name(var_name: str) -> str:
    """A TF2 variable name -> the TF1 checkpoint name deeplab2's loader looks up (the stem's lost scope restored)."""
    name = var_name.removesuffix(':0')
    return name if name.startswith('moat/') else 'moat/stem/' + name


def run_tf(args: argparse.Namespace) -> None:
    import tensorflow as tf

    moat, moat_attention = _import_deeplab2(Path(args.deeplab2))
    if args.full:
        official, full_sizes = FULL[args.full]
        config = moat._get_moat_config_via_model_name(official)
        config.build_classification_head_with_class_num = 1000
        sizes, cfg = [(s, s) for s in full_sizes], dict(model=args.full)
    else:
        config = moat.Config(**FIXTURE_CFG)
        sizes, cfg = FIXTURE_SIZES, dict(FIXTURE_CFG)
    config.window_size, config.pool_size, config.survival_prob = None, args.pool_size, None
    rng = np.random.default_rng(SEED)
    inputs = fixture_inputs(sizes)
    values, logits = None, {}
    for (h, w), (key, x) in zip(sizes, inputs.items()):
        model = moat.MOAT(**config)
        model(tf.zeros([1, h, w, 3]), training=False)  # eager build at this size (global attention: map = window)
        if values is None:
            values = [_perturbed(_checkpoint_name(v.name), tuple(v.shape), rng) for v in model.variables]
        for var, value in zip(model.variables, values):
            var.assign(value)
        _refresh_relative_bias(model, moat_attention, tf)
        out = model(tf.constant(x.transpose(0, 2, 3, 1)), training=False)
        logits[key] = np.asarray(out, dtype=np.float32)
    names = [_checkpoint_name(v.name) for v in model.variables]
    trainable = {_checkpoint_name(v.name) for v in model.trainable_variables}
    arrays = {}
    for name, value in zip(names, values):
        if name in trainable:  # EMA copies hold the values used; the raw variables something else
            arrays[name + EMA] = value
            value = (value + 0.5 * rng.standard_normal(value.shape)).astype(np.float16).astype(np.float32)
        arrays[name] = value
    meta = dict(cfg=cfg, pool_size=args.pool_size, sizes=[list(s) for s in sizes], full=args.full)
    np.savez(args.out, __meta__=json.dumps(meta), **{f'var:{k}': v for k, v in arrays.items()},
             **{f'input:{k}': v for k, v in inputs.items()}, **{f'logits:{k}': v for k, v in logits.items()})
    if args.names:  # tests/data/moat_tf_variables.json: names and shapes, for the converter test on synthetic values
        note = (f"deeplab2 MOAT {args.full or 'fixture'} ({config.build_classification_head_with_class_num} classes): "
                "every variable under its TF1 checkpoint name (deeplab2's loader adds the stem's 'moat/stem/' scope) "
                "with its shape; 'ema': the variables written with an '/ExponentialMovingAverage' copy here (the "
                f"trainable ones). Made by tools/moat_tf_parity.py tf --full {args.full} --names.")
        listing = dict(note=note, variables={k: list(v.shape) for k, v in sorted(zip(names, values))},
                       ema=sorted(trainable))
        Path(args.names).write_text(json.dumps(listing, separators=(',', ':')) + '\n')
    print(f'wrote {args.out}: {len(arrays)} variables, logits at {list(logits)}')


# ------------------------------------------------------------------------------------------------------------------
# step 2: torch

def ours_from_tf_config(cfg: dict, pool_size: int) -> dict:
    """deeplab2 config keys -> MOAT keyword arguments."""
    return dict(stem_size=tuple(cfg['stem_size']), block_types=tuple(cfg['block_type']),
                depths=tuple(cfg['num_blocks']), dims=tuple(cfg['hidden_size']), head_dim=cfg.get('head_size', 32),
                num_classes=cfg['build_classification_head_with_class_num'], pool_size=pool_size)


def _compare(path: str) -> dict:
    """Ours on one ``.npz``'s variables; prints the largest logit differences, returns the fixture entry."""
    import timm
    import torch

    import backbones  # noqa: F401
    from backbones.checkpoint import fit
    from backbones.moat import MOAT, from_tf

    data = np.load(path)
    meta = json.loads(str(data['__meta__']))
    variables = {k[4:]: data[k] for k in data.files if k.startswith('var:')}
    if meta['full']:
        model = timm.create_model(meta['cfg']['model'], pool_size=meta['pool_size']).eval()
    else:
        model = MOAT(**ours_from_tf_config(meta['cfg'], meta['pool_size'])).eval()
    model.load_state_dict(fit(from_tf(variables), model), strict=True)
    inputs = {k[6:]: torch.from_numpy(data[k]) for k in data.files if k.startswith('input:')}
    logits = {k[7:]: torch.from_numpy(data[k]) for k in data.files if k.startswith('logits:')}
    for key, x in inputs.items():
        with torch.no_grad():
            diff = (model(x) - logits[key]).abs().max().item()
        print(f'{path} pool_size={meta["pool_size"]} {key}: max |ours - deeplab2| = {diff:.3g} (logits up to '
              f'{logits[key].abs().max().item():.3g})')
    ema = sorted(k.removesuffix(EMA) for k in variables if k.endswith(EMA))
    used = {k: torch.from_numpy(variables[k + EMA] if k in ema else variables[k]).half() for k in variables
            if not k.endswith(EMA)}
    return dict(cfg=meta['cfg'], pool_size=meta['pool_size'], full=meta['full'], inputs=inputs, logits=logits,
                variables=used, ema=ema)


def run_torch(args: argparse.Namespace) -> None:
    import torch

    entries = [_compare(path) for path in args.npz]
    if args.write:
        if any(e['full'] for e in entries):
            raise SystemExit('--write takes the reduced fixture configuration, not --full')
        # one set of variables (the values every run used; the EMA names listed, tests/test_moat.py adds raw copies)
        variables, ema, inputs = (entries[0].pop(k) for k in ('variables', 'ema', 'inputs'))
        for e in entries[1:]:
            same = e.pop('ema') == ema and all(torch.equal(v, variables[k]) for k, v in e.pop('variables').items())
            if not same or any(not torch.equal(v, inputs[k]) for k, v in e.pop('inputs').items()):
                raise SystemExit('the .npz files hold different variables or inputs: make them with the same seed')
        torch.save(dict(variables=variables, ema=ema, inputs={k: v.half() for k, v in inputs.items()},
                        runs={f'pool{e["pool_size"]}': e for e in entries}), args.write)
        print(f'wrote {args.write}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='step', required=True)
    tf_args = sub.add_parser('tf', help='build deeplab2 MOAT in TensorFlow, write variables + logits (.npz)')
    tf_args.add_argument('--deeplab2', required=True, help='path to a google-research/deeplab2 checkout')
    tf_args.add_argument('--out', required=True)
    tf_args.add_argument('--full', choices=sorted(FULL), help='a full released variant instead of the fixture')
    tf_args.add_argument('--pool-size', type=int, default=2)
    tf_args.add_argument('--names', help='also write {TF1 variable name: shape} as JSON')
    torch_args = sub.add_parser('torch', help='compare ours on the same variables; --write the CI fixture')
    torch_args.add_argument('--npz', required=True, nargs='+', help='one or more files of the tf step')
    torch_args.add_argument('--write')
    args = parser.parse_args()
    (run_tf if args.step == 'tf' else run_torch)(args)


if __name__ == '__main__':
    main()
