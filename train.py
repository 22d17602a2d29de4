#!/usr/bin/env python3
"""ImageNet-style training of attnzoo (or any timm) models, built on timm's data, optim, scheduler, loss and utils.

    python train.py --config configs/imagenet/nat_mini.yaml --data-dir /data/imagenet
    torchrun --nproc-per-node 8 train.py --config configs/imagenet/nat_mini.yaml --data-dir /data/imagenet
    python train.py --model nat_mini --epochs 5          # no --data-dir: the embedded digits dataset

Arguments follow timm's train.py; ``--config`` YAML files set their defaults. Each epoch writes ``last.pth.tar``
(atomically), ``model_best.pth.tar`` and the log (``summary.csv``/``summary.json``) into the output folder;
``--resume <folder>/last.pth.tar`` continues exactly where the last finished epoch left off.
"""
import argparse
import csv
import functools
import io
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from timm.data import Mixup, create_transform, resolve_data_config
from timm.data.distributed_sampler import RepeatAugSampler
from timm.layers import convert_sync_batchnorm, set_fast_norm
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import create_model, model_parameters
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import (
    CheckpointSaver,
    ModelEmaV3,
    NativeScaler,
    ParseKwargs,
    dispatch_clip_grad,
    distribute_bn,
    random_seed,
)
from timm.utils.model import get_state_dict, unwrap_model
from tqdm import tqdm

import backbones  # noqa: F401  (registers the zoo's models with timm)
import param_rules
import token_label
import zoo_common
from zoo_common import CliError

_logger = logging.getLogger('train')


def build_parser() -> argparse.ArgumentParser:
    """The command line; names and defaults follow timm's train.py."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-c', '--config', default='', metavar='FILE', help='YAML file of argument defaults')

    group = parser.add_argument_group('Dataset')
    group.add_argument('data', nargs='?', metavar='DIR', help='dataset root (same as --data-dir)')
    group.add_argument('--data-dir', metavar='DIR', help='dataset root; without it the embedded digits set is used')
    group.add_argument('--dataset', default='', metavar='NAME', help="timm dataset spec ('' = folder, 'digits')")
    group.add_argument('--train-split', default='train', metavar='NAME')
    group.add_argument('--val-split', default='validation', metavar='NAME')
    group.add_argument('--train-num-samples', type=int, default=None, metavar='N', help='train on N samples')
    group.add_argument('--val-num-samples', type=int, default=None, metavar='N', help='validate on N samples')
    group.add_argument('--dataset-download', action='store_true', help='allow torch/ datasets to download')
    group.add_argument('--class-map', default='', metavar='FILE')

    group = parser.add_argument_group('Model')
    group.add_argument('--model', default=zoo_common.DEFAULT_MODEL, metavar='NAME',
                       help=f'model to train (default: {zoo_common.DEFAULT_MODEL}, the smallest zoo model)')
    group.add_argument('--pretrained', action='store_true', help="start from the model's pretrained weights")
    group.add_argument('--pretrained-path', default=None, metavar='PATH',
                       help='start from this weight file (ours or official); a classifier for another number '
                            'of classes is left freshly initialised')
    group.add_argument('--initial-checkpoint', default='', metavar='PATH', help='load these weights (strict)')
    group.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=None,
                       help='take the EMA weights of the --initial-checkpoint / --pretrained-path file (--no-use-ema: '
                            "its raw weights); default: the model family's default weights (backbones.checkpoint)")
    group.add_argument('--resume', default='', metavar='PATH', help='continue a run from its last.pth.tar')
    group.add_argument('--no-resume-opt', action='store_true', help='do not restore the optimizer on resume')
    group.add_argument('--num-classes', type=int, default=None, metavar='N', help='default: from the dataset')
    group.add_argument('--gp', default=None, metavar='POOL', help='global pool type')
    group.add_argument('--img-size', type=int, default=None, metavar='N')
    group.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N')
    group.add_argument('--crop-pct', default=None, type=float)
    group.add_argument('--mean', type=float, nargs='+', default=None)
    group.add_argument('--std', type=float, nargs='+', default=None)
    group.add_argument('--interpolation', default='', metavar='NAME')
    group.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='per-process batch size')
    group.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N')
    group.add_argument('--channels-last', action='store_true')
    group.add_argument('--grad-accum-steps', type=int, default=1, metavar='N')
    group.add_argument('--grad-checkpointing', action='store_true')
    group.add_argument('--fast-norm', action='store_true')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    group.add_argument('--torch-compile', '--torchcompile', dest='torch_compile', nargs='?', default=None,
                       const='inductor', metavar='BACKEND', help='torch.compile the model (default backend inductor)')
    group.add_argument('--torchcompile-mode', default=None, metavar='MODE',
                       help="torch.compile mode ('default', 'reduce-overhead', 'max-autotune', ...)")

    group = parser.add_argument_group('Device and precision')
    group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    group.add_argument('--amp', action='store_true', help='mixed precision (autocast)')
    group.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'))

    group = parser.add_argument_group('Optimizer')
    group.add_argument('--opt', default='sgd', metavar='OPTIMIZER')
    group.add_argument('--opt-eps', default=None, type=float)
    group.add_argument('--opt-betas', default=None, type=float, nargs='+')
    group.add_argument('--momentum', type=float, default=0.9)
    group.add_argument('--weight-decay', type=float, default=2e-5)
    group.add_argument('--clip-grad', type=float, default=None, metavar='NORM')
    group.add_argument('--clip-mode', default='norm', choices=('norm', 'value', 'agc'))
    group.add_argument('--layer-decay', type=float, default=None,
                       help="layer-wise lr decay (timm's, BEiT rule); composes with --param-rules")
    group.add_argument('--param-rules', type=_yaml_mapping, default=None, metavar='YAML',
                       help="per-parameter rules by name pattern, e.g. \"{'*.conv_offset.weight': {lr_mult: 0.01}}\" "
                            '(lr_mult, decay_mult; see param_rules.py); a recipe sets them as a mapping')
    group.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs)

    group = parser.add_argument_group('Learning rate schedule')
    group.add_argument('--sched', default='cosine', metavar='SCHEDULER')
    group.add_argument('--sched-on-updates', action='store_true', help='step the schedule every update')
    group.add_argument('--lr', type=float, default=None, help='absolute lr; default lr-base * batch / lr-base-size')
    group.add_argument('--lr-base', type=float, default=0.1)
    group.add_argument('--lr-base-size', type=int, default=256)
    group.add_argument('--lr-base-scale', default='', choices=('', 'linear', 'sqrt'))
    group.add_argument('--lr-noise', type=float, nargs='+', default=None)
    group.add_argument('--lr-noise-pct', type=float, default=0.67)
    group.add_argument('--lr-noise-std', type=float, default=1.0)
    group.add_argument('--lr-cycle-mul', type=float, default=1.0)
    group.add_argument('--lr-cycle-decay', type=float, default=0.5)
    group.add_argument('--lr-cycle-limit', type=int, default=1)
    group.add_argument('--lr-k-decay', type=float, default=1.0)
    group.add_argument('--warmup-lr', type=float, default=1e-5)
    group.add_argument('--min-lr', type=float, default=0)
    group.add_argument('--epochs', type=int, default=300)
    group.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+')
    group.add_argument('--decay-epochs', type=float, default=90)
    group.add_argument('--warmup-epochs', type=int, default=5)
    group.add_argument('--warmup-prefix', action='store_true')
    group.add_argument('--cooldown-epochs', type=int, default=0)
    group.add_argument('--patience-epochs', type=int, default=10)
    group.add_argument('--decay-rate', type=float, default=0.1)

    group = parser.add_argument_group('Augmentation and regularization')
    group.add_argument('--no-aug', action='store_true')
    group.add_argument('--scale', type=float, nargs='+', default=[0.08, 1.0])
    group.add_argument('--ratio', type=float, nargs='+', default=[3. / 4., 4. / 3.])
    group.add_argument('--hflip', type=float, default=0.5)
    group.add_argument('--vflip', type=float, default=0.)
    group.add_argument('--color-jitter', type=float, default=0.4)
    group.add_argument('--aa', default=None, metavar='NAME', help="e.g. 'rand-m9-mstd0.5-inc1'")
    group.add_argument('--reprob', type=float, default=0.)
    group.add_argument('--remode', default='pixel')
    group.add_argument('--recount', type=int, default=1)
    group.add_argument('--mixup', type=float, default=0.0)
    group.add_argument('--cutmix', type=float, default=0.0)
    group.add_argument('--cutmix-minmax', type=float, nargs='+', default=None)
    group.add_argument('--mixup-prob', type=float, default=1.0)
    group.add_argument('--mixup-switch-prob', type=float, default=0.5)
    group.add_argument('--mixup-mode', default='batch', choices=('batch', 'pair', 'elem'))
    group.add_argument('--mixup-off-epoch', default=0, type=int)
    group.add_argument('--smoothing', type=float, default=0.1)
    group.add_argument('--aug-repeats', type=float, default=0, metavar='N',
                       help='repeated augmentation: each image N times per epoch, spread over the ranks (timm)')
    group.add_argument('--bce-loss', action='store_true', help='binary cross-entropy training loss (timm)')
    group.add_argument('--bce-sum', action='store_true', help='sum the BCE over classes instead of the mean')
    group.add_argument('--bce-target-thresh', type=float, default=None, help='binarise BCE targets at this value')
    group.add_argument('--bce-pos-weight', type=float, default=None, help='BCE positive-sample weight')
    group.add_argument('--train-interpolation', default='random')
    group.add_argument('--drop', type=float, default=0.0)
    group.add_argument('--drop-path', type=float, default=None)
    group.add_argument('--dist-bn', default='reduce', choices=('', 'broadcast', 'reduce'))
    group.add_argument('--sync-bn', action='store_true', help='synchronised BatchNorm across processes (DDP on CUDA)')

    group = parser.add_argument_group('Token labelling (GLNet *_tklb, token_label.py)')
    group.add_argument('--token-label', action='store_true',
                       help='train with token labels (the *_tklb recipes set it; needs --token-label-dir)')
    group.add_argument('--token-label-dir', default=None, metavar='DIR',
                       help="TokenLabeling label maps of the training images (<DIR>/<class>/<image stem>.pt)")
    group.add_argument('--token-label-size', type=int, default=7, metavar='S',
                       help='token labels per side: the final grid (input size / 32)')
    group.add_argument('--dense-weight', type=float, default=0.5, help='weight of the token (dense) loss')
    group.add_argument('--cls-weight', type=float, default=1.0, help='weight of the image-level loss')

    group = parser.add_argument_group('Model EMA')
    group.add_argument('--model-ema', action='store_true')
    group.add_argument('--model-ema-decay', type=float, default=0.9998)
    group.add_argument('--model-ema-warmup', action='store_true')

    group = parser.add_argument_group('Misc')
    group.add_argument('--seed', type=int, default=42)
    group.add_argument('--log-interval', type=int, default=50, metavar='N',
                       help='every N updates: refresh the progress bar, or log a line when stdout is not a terminal')
    group.add_argument('--checkpoint-hist', type=int, default=10, metavar='N', help='numbered checkpoints kept')
    group.add_argument('-j', '--workers', type=int, default=zoo_common.default_workers(), metavar='N',
                       help='data loading processes per training process (default: up to 4, no more than the cores)')
    group.add_argument('--pin-mem', action='store_true')
    group.add_argument('--output', default='', metavar='PATH', help='parent folder (default ./output/train)')
    group.add_argument('--experiment', default='', metavar='NAME', help='run folder name inside --output')
    group.add_argument('--eval-metric', default='top1', choices=('top1', 'top5', 'loss'))
    group.add_argument('--no-plot', action='store_true', help='skip the PNG plot of the curves')
    return parser


def _yaml_mapping(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f'not YAML: {zoo_common.first_line(e)}') from None


class TrainState:
    """Checkpoint entries beyond timm's: scheduler and per-epoch history (timm's CheckpointSaver task hook)."""

    def __init__(self, model: nn.Module, model_ema: nn.Module | None, scheduler: Any):
        self.model = model
        self.model_ema = model_ema
        self.scheduler = scheduler
        self.history: list[dict[str, Any]] = []

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn=unwrap_model) -> dict[str, Any]:
        if ema:
            return {} if self.model_ema is None else {'state_dict_ema': get_state_dict(self.model_ema, unwrap_fn)}
        return {
            'state_dict': get_state_dict(self.model, unwrap_fn),
            'scheduler': self.scheduler.state_dict(),
            'history': self.history,
        }


class AtomicCheckpointSaver(CheckpointSaver):
    """timm's saver with crash-safe file operations: it unlinks ``last.pth.tar`` before renaming over it and copies
    straight onto ``model_best`` where hard links fail; here every file appears whole or not at all (fsync + rename)."""

    def _save(self, save_path: str, epoch: int, metric: float | None = None) -> None:
        super()._save(save_path, epoch, metric)
        with open(save_path, 'rb') as f:
            os.fsync(f.fileno())

    def _replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def _duplicate(self, src: str, dst: str) -> None:
        tmp = dst + '.tmp'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def _setup_distributed(args: argparse.Namespace) -> torch.device:
    """Join the torchrun process group when launched by torchrun (NCCL on CUDA, gloo on CPU); pick the device."""
    args.world_size = int(os.environ.get('WORLD_SIZE', '1'))
    args.rank = int(os.environ.get('RANK', '0'))
    args.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    args.distributed = args.world_size > 1
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise CliError('--device cuda: CUDA is not available (use --device cpu)')
        device = torch.device('cuda', args.local_rank if args.distributed else (device.index or 0))
        torch.cuda.set_device(device)
    if args.distributed and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    return device


def _create_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """timm's optimizer factory; with --param-rules its groups come from :func:`param_rules.param_groups` (timm's
    weight-decay / layer-decay groups, then the rules)."""
    kwargs = optimizer_kwargs(cfg=args)
    rules = param_rules.parse_rules(args.param_rules, '--param-rules')  # checked in main
    if rules:
        kwargs['param_group_fn'] = functools.partial(
            param_rules.param_groups, lr=args.lr, weight_decay=args.weight_decay, rules=rules,
            layer_decay=args.layer_decay)
    try:
        return create_optimizer_v2(model, **kwargs, **args.opt_kwargs)
    except ValueError as e:
        raise CliError(str(e)) from None


def _prepare_output_dir(args: argparse.Namespace) -> str:
    """The run folder: the resumed run's folder, or ``--output/--experiment``; checked writable before training."""
    if args.resume and not args.experiment:
        out_dir = os.path.dirname(os.path.abspath(args.resume))
    else:
        name = args.experiment or '-'.join(
            [datetime.now().strftime('%Y%m%d-%H%M%S'), args.model.replace('/', '_'), str(args.input_size[-1])])
        out_dir = os.path.join(args.output or os.path.join('output', 'train'), name)
        if not args.resume and os.path.exists(os.path.join(out_dir, 'last.pth.tar')):
            raise CliError(f'--output {out_dir} already holds a run (last.pth.tar); '
                           'continue it with --resume or choose another --experiment')
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise CliError(f'--output {out_dir}: not writable ({e.strerror or zoo_common.first_line(e)})') from None
    return out_dir


def _create_model(args: argparse.Namespace, num_classes: int | None) -> nn.Module:
    zoo_common.check_model_name(args.model)
    kwargs = dict(args.model_kwargs)
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    if args.drop_path is not None:
        kwargs['drop_path_rate'] = args.drop_path
    if args.gp:
        kwargs['global_pool'] = args.gp
    if args.fast_norm:
        set_fast_norm()
    try:
        model = create_model(
            args.model, pretrained=args.pretrained and not args.pretrained_path, drop_rate=args.drop, **kwargs)
    except (RuntimeError, ValueError, TypeError, OSError) as e:
        raise CliError(f'--model {args.model}: cannot create it ({zoo_common.first_line(e)})') from None
    if args.pretrained_path:
        zoo_common.load_model_weights(model, args.pretrained_path, '--pretrained-path', use_ema=args.use_ema,
                                      new_classifier=True)
    return model


_SPLIT_FOLDERS = {'train': ('train', 'training'), 'validation': ('validation', 'val', 'valid', 'eval', 'evaluation')}


def _check_split_folders(args: argparse.Namespace) -> None:
    """Require both split sub-folders of a folder dataset: timm falls back to the root folder when one is missing,
    which would silently validate (and pick the best checkpoint) on the training images."""
    if args.dataset not in ('', 'folder') or not args.data_dir or not os.path.isdir(args.data_dir):
        return
    for option, split in (('--train-split', args.train_split), ('--val-split', args.val_split)):
        names = _SPLIT_FOLDERS.get(split, (split,))
        if not any(os.path.isdir(os.path.join(args.data_dir, name)) for name in names):
            raise CliError(f'--data-dir {args.data_dir}: no {"/".join(names)} sub-folder for {option} {split}')


def _create_datasets(args: argparse.Namespace) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """Train and eval datasets (the embedded one without --data-dir); fills in --num-classes and the input size."""
    if zoo_common.is_embedded(args.dataset, args.data_dir) and args.img_size is None and args.input_size is None:
        args.img_size = zoo_common.EMBEDDED_IMG_SIZE
    _check_split_folders(args)
    kwargs = dict(class_map=args.class_map or None, download=args.dataset_download, batch_size=args.batch_size)
    if args.token_label and not args.token_label_dir:
        raise CliError('--token-label: give the folder of the label maps with --token-label-dir')
    args.token_label = args.token_label or bool(args.token_label_dir)
    if args.token_label:
        dataset_train = _token_label_dataset(args)
    else:
        dataset_train = zoo_common.create_dataset(
            args.dataset, args.data_dir, args.train_split, is_training=True, num_samples=args.train_num_samples,
            **kwargs)
    dataset_eval = zoo_common.create_dataset(
        args.dataset, args.data_dir, args.val_split, num_samples=args.val_num_samples, **kwargs)
    if args.num_classes is None:
        args.num_classes = zoo_common.dataset_num_classes(dataset_train)
    return dataset_train, dataset_eval


def _token_label_dataset(args: argparse.Namespace) -> torch.utils.data.Dataset:
    """The training folder with its token labels (--token-label-dir): an image folder dataset only."""
    if args.dataset not in ('', 'folder') or not args.data_dir:
        raise CliError('--token-label-dir: needs an image folder dataset (--data-dir with class folders)')
    if args.train_num_samples:
        raise CliError('--token-label-dir: --train-num-samples is not supported')
    names = _SPLIT_FOLDERS.get(args.train_split, (args.train_split,))
    root = next(os.path.join(args.data_dir, n) for n in names if os.path.isdir(os.path.join(args.data_dir, n)))
    try:
        return token_label.TokenLabelDataset(root, args.token_label_dir)
    except (OSError, ValueError, RuntimeError) as e:
        raise CliError(f'--token-label-dir {args.token_label_dir}: {e}') from e


def _create_loaders(
        args: argparse.Namespace,
        data_config: dict[str, Any],
        dataset_train: torch.utils.data.Dataset,
        dataset_eval: torch.utils.data.Dataset,
        device: torch.device,
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """Loaders with timm's train (augmenting) and eval (resize + center crop) transforms."""
    if len(dataset_train) < args.batch_size * args.world_size:
        raise CliError(f'--batch-size {args.batch_size}: larger than the training set ({len(dataset_train)} '
                       f'images over {args.world_size} process(es))')
    if args.token_label:
        if args.no_aug or args.input_size[-1] != args.input_size[-2]:
            raise CliError('--token-label-dir: needs augmentation and a square input size')
        train_transform = token_label.TokenLabelTransform(
            args.input_size[-1], scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip,
            color_jitter=args.color_jitter, auto_augment=args.aa, interpolation=args.train_interpolation,
            mean=data_config['mean'], std=data_config['std'], re_prob=args.reprob, re_mode=args.remode,
            re_count=args.recount)
    else:
        train_transform = create_transform(
            args.input_size, is_training=True, no_aug=args.no_aug, scale=args.scale, ratio=args.ratio,
            hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter, auto_augment=args.aa,
            interpolation=args.train_interpolation, mean=data_config['mean'], std=data_config['std'],
            re_prob=args.reprob, re_mode=args.remode, re_count=args.recount)
    eval_transform = create_transform(
        args.input_size, interpolation=data_config['interpolation'], mean=data_config['mean'],
        std=data_config['std'], crop_pct=data_config['crop_pct'], crop_mode=data_config.get('crop_mode'))
    loader_train = _build_loader(dataset_train, train_transform, args.batch_size, args, True, device)
    loader_eval = _build_loader(
        dataset_eval, eval_transform, args.validation_batch_size or args.batch_size, args, False, device)
    return loader_train, loader_eval


def _create_mixup_and_loss(args: argparse.Namespace) -> tuple[Mixup | None, nn.Module]:
    """timm's batch Mixup/CutMix (soft targets) when enabled, and the matching training loss; with token labels
    the token-labelling loss (its CutMix is inside the model)."""
    if args.token_label:
        if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None or args.bce_loss:
            raise CliError('--token-label-dir: token labelling mixes inside the model and has its own loss; set '
                           '--mixup 0 --cutmix 0 (as the official main_tklb.py) and no --bce-loss')
        grid = args.input_size[-1] // 32
        if args.token_label_size != grid:
            raise CliError(f'--token-label-size {args.token_label_size}: must be the final token grid side, input '
                           f'size / 32 = {grid}')
        return None, token_label.TokenLabelLoss(args.num_classes, args.token_label_size, args.smoothing,
                                                args.dense_weight, args.cls_weight)
    if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
        if args.batch_size % 2:
            raise CliError(f'--batch-size {args.batch_size}: must be even with mixup/cutmix')
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                         prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                         label_smoothing=args.smoothing, num_classes=args.num_classes)
        if args.bce_loss:  # as timm: mixup already smoothed the soft targets
            return mixup_fn, BinaryCrossEntropy(target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum,
                                                pos_weight=args.bce_pos_weight)
        return mixup_fn, SoftTargetCrossEntropy()
    if args.bce_loss:
        return None, BinaryCrossEntropy(smoothing=args.smoothing, target_threshold=args.bce_target_thresh,
                                        sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight)
    if args.smoothing:
        return None, LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return None, nn.CrossEntropyLoss()


def _build_loader(
        dataset: torch.utils.data.Dataset,
        transform: Any,
        batch_size: int,
        args: argparse.Namespace,
        train: bool,
        device: torch.device,
) -> torch.utils.data.DataLoader:
    """A DataLoader over timm transforms.

    Training shuffles with a DistributedSampler (also for one process): the order depends only on seed and epoch,
    so a resumed run sees the same batches. Evaluation shards the set without padding so reduced sums are exact.
    timm's iterable datasets (wds/, hfids/, tfds/) shard and shuffle themselves.
    """
    dataset.transform = transform
    if isinstance(dataset, torch.utils.data.IterableDataset):
        sampler = None
    elif train and args.aug_repeats:
        sampler = RepeatAugSampler(dataset, num_replicas=args.world_size, rank=args.rank, shuffle=True,
                                   num_repeats=args.aug_repeats)
    elif train:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=args.world_size, rank=args.rank, shuffle=True, seed=args.seed, drop_last=True)
    else:
        sampler = range(args.rank, len(dataset), args.world_size)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=args.workers,
        pin_memory=args.pin_mem and device.type == 'cuda',
        drop_last=train,
        worker_init_fn=_seed_worker,
        persistent_workers=False,  # fresh workers each epoch: their seeds come from the (checkpointed) torch RNG
    )


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def _all_reduce_sum(values: list[float], device: torch.device, distributed: bool) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if distributed:
        dist.all_reduce(t)
    return t.tolist()


def evaluate(
        model: nn.Module,
        loader: torch.utils.data.DataLoader,
        args: argparse.Namespace,
        device: torch.device,
        amp_ctx: Any,
) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (%), summed over all ranks' shards."""
    sums = zoo_common.evaluate_sums(model, loader, device, amp_ctx, args.channels_last)
    loss_sum, top1, top5, count = _all_reduce_sum(sums, device, args.distributed)
    count = max(count, 1.)
    return {'loss': loss_sum / count, 'top1': 100. * top1 / count, 'top5': 100. * top5 / count}


def train_one_epoch(
        epoch: int,
        model: nn.Module,
        loader: torch.utils.data.DataLoader,
        optimizer: torch.optim.Optimizer,
        loss_fn: nn.Module,
        args: argparse.Namespace,
        device: torch.device,
        lr_scheduler: Any,
        amp_ctx: Any,
        loss_scaler: NativeScaler | None,
        model_ema: ModelEmaV3 | None,
        mixup_fn: Mixup | None,
        updates_per_epoch: int,
) -> dict[str, float]:
    """One pass over the training set with gradient accumulation; returns the mean loss over all ranks.

    Every ``--log-interval`` updates the loss is reduced over the ranks, so all of them agree on a divergence and
    stop together; rank 0 shows it on the progress bar, or, when tqdm is off (stdout is not a terminal: schedulers,
    CI, log files), logs a line with loss, lr, throughput, data-loading time and ETA, as timm does.
    """
    model.train()
    accum = args.grad_accum_steps
    num_batches = len(loader)
    last_accum_start = num_batches - (num_batches % accum or accum)
    num_updates = epoch * updates_per_epoch
    loss_sum = seen = 0.
    start = time.perf_counter()
    bar = tqdm(loader, desc=f'epoch {epoch + 1}', unit='batch', leave=False, dynamic_ncols=True,
               disable=None if args.rank == 0 else True)
    log_lines = args.rank == 0 and bar.disable
    data_time, end = 0., time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for batch_idx, (x, y) in enumerate(bar):
        data_time += time.perf_counter() - end
        need_update = (batch_idx + 1) % accum == 0 or batch_idx + 1 == num_batches
        group_size = accum if batch_idx < last_accum_start else num_batches - last_accum_start
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixup_fn is not None:
            x, y = mixup_fn(x, y)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        no_sync = model.no_sync if args.distributed and not need_update else nullcontext
        with no_sync():
            with amp_ctx():
                loss = loss_fn(model(x), y)
            scaled = loss / group_size
            if loss_scaler is not None:
                loss_scaler(scaled, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                            parameters=model_parameters(model, exclude_head='agc' in args.clip_mode),
                            need_update=need_update)
            else:
                scaled.backward()
                if need_update:
                    if args.clip_grad is not None:
                        dispatch_clip_grad(model_parameters(model, exclude_head='agc' in args.clip_mode),
                                           value=args.clip_grad, mode=args.clip_mode)
                    optimizer.step()
        loss_sum += loss.detach() * len(x)
        seen += len(x)
        end = time.perf_counter()
        if not need_update:
            continue
        optimizer.zero_grad(set_to_none=True)
        num_updates += 1
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        lr_scheduler.step_update(num_updates=num_updates)
        if num_updates % args.log_interval == 0 or batch_idx + 1 == num_batches:
            # one all-reduce: the loss over every rank, so a NaN on any rank stops all of them at this same step
            # (instead of one rank raising while the others wait in the next collective)
            total_loss, total_seen = _all_reduce_sum([float(loss_sum), seen], device, args.distributed)
            mean_loss = total_loss / max(total_seen, 1.)
            if not math.isfinite(mean_loss):
                raise CliError(f'training diverged: loss is {mean_loss} in epoch {epoch}, batch {batch_idx} '
                               '(the last good checkpoint is kept; lower --lr or add --clip-grad)')
            lr = optimizer.param_groups[0]['lr']
            elapsed = time.perf_counter() - start
            ips = total_seen / elapsed
            if log_lines:
                done = batch_idx + 1
                eta = timedelta(seconds=round(elapsed / done * (num_batches - done)))
                _logger.info(f'epoch {epoch + 1} [{done:>{len(str(num_batches))}}/{num_batches} '
                             f'({100. * done / num_batches:3.0f}%)]  loss {mean_loss:.4f}  lr {lr:.3e}  '
                             f'{ips:.0f} img/s  data {data_time / done:.3f}s/batch  ETA {eta}')
            else:
                bar.set_postfix_str(f'loss {mean_loss:.4f}  lr {lr:.2e}  {ips:.0f} img/s', refresh=False)
    loss_sum, seen = _all_reduce_sum([float(loss_sum), seen], device, args.distributed)
    elapsed = time.perf_counter() - start
    return {'loss': loss_sum / max(seen, 1.), 'img_per_s': seen / elapsed, 'time_s': elapsed}


def _read_resume(path: str, model: nn.Module, model_name: str) -> dict[str, Any]:
    """Read and check a --resume file before anything is written, so a bad one cannot replace a good run."""
    ckpt = zoo_common.read_checkpoint(path, '--resume')
    missing = [k for k in ('state_dict', 'optimizer', 'epoch', 'scheduler') if k not in ckpt]
    if missing:
        raise CliError(f'--resume {path}: not a train.py checkpoint (missing {", ".join(missing)}); '
                       'use --initial-checkpoint to start from its weights')
    problem = zoo_common.state_dict_mismatch(model, ckpt['state_dict'])
    if problem:
        raise CliError(f"--resume {path} does not match model '{model_name}': {problem}")
    return ckpt


def _load_resume(
        ckpt: dict[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_scaler: NativeScaler | None,
        model_ema: ModelEmaV3 | None,
        state: TrainState,
        saver: CheckpointSaver | None,
        args: argparse.Namespace,
) -> int:
    """Restore everything a run needs to continue bit-exactly; returns the epoch to start from."""
    model.load_state_dict(ckpt['state_dict'])
    if not args.no_resume_opt:
        try:
            optimizer.load_state_dict(ckpt['optimizer'])
        except ValueError as e:  # other parameter groups: --param-rules / --layer-decay / --weight-decay changed
            raise CliError(f'--resume {args.resume}: its optimizer does not fit this run ({e}); keep the run\'s '
                           '--param-rules, --layer-decay and --weight-decay, or add --no-resume-opt') from None
    if loss_scaler is not None and loss_scaler.state_dict_key in ckpt:
        loss_scaler.load_state_dict(ckpt[loss_scaler.state_dict_key])
    if model_ema is not None:
        model_ema.module.load_state_dict(ckpt.get('state_dict_ema', ckpt['state_dict']))
    state.scheduler.load_state_dict(ckpt['scheduler'])
    state.history = list(ckpt.get('history', []))
    if saver is not None and 'saver' in ckpt:
        saver.load_state_dict(ckpt['saver'])
    return int(ckpt['epoch']) + 1


def _write_logs(out_dir: str, history: list[dict[str, Any]]) -> None:
    """Rewrite summary.csv and summary.json from the checkpointed history (so they always agree with it)."""
    fields = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    zoo_common.atomic_write_text(os.path.join(out_dir, 'summary.csv'), buf.getvalue())
    zoo_common.atomic_write_text(os.path.join(out_dir, 'summary.json'), json.dumps(history, indent=1) + '\n')


def plot_curves(history: list[dict[str, Any]], path: str, title: str) -> None:
    """Save a PNG of train/val loss and val top-1/top-5 accuracy per epoch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row['epoch'] + 1 for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row['train_loss'] for row in history], 'o-', label='train loss')
    ax_loss.plot(epochs, [row['eval_loss'] for row in history], 'o-', label='val loss')
    ax_acc.plot(epochs, [row['eval_top1'] for row in history], 'o-', label='val top-1')
    ax_acc.plot(epochs, [row['eval_top5'] for row in history], 'o-', label='val top-5')
    if 'ema_top1' in history[0]:
        ax_acc.plot(epochs, [row['ema_top1'] for row in history], 'o--', label='EMA val top-1')
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set(xlabel='epoch', ylabel='loss')
    ax_acc.set(xlabel='epoch', ylabel='accuracy (%)', ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path + '.tmp.png', dpi=100)
    plt.close(fig)
    os.replace(path + '.tmp.png', path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; returns the last epoch's log row (with the best metric) for programmatic use."""
    args = zoo_common.parse_args(build_parser(), argv)
    if args.data and not args.data_dir:
        args.data_dir = args.data
    if args.grad_accum_steps < 1:
        raise CliError('--grad-accum-steps must be >= 1')
    try:
        param_rules.parse_rules(args.param_rules, '--param-rules')  # fail before anything is loaded or written
    except ValueError as e:
        raise CliError(str(e)) from None
    device = _setup_distributed(args)
    try:
        return _train(args, device)
    except CliError:
        # every rank stops with its error line (a divergence is agreed on by all ranks) and leaves the group
        if dist.is_initialized():
            dist.destroy_process_group()
        raise


def _train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    primary = args.rank == 0
    if primary:
        logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout, force=True)
        logging.getLogger('timm.utils').setLevel(logging.WARNING)  # the saver's per-epoch file listing
    random_seed(args.seed, 0)  # the same initial weights on every rank (the EMA copy is taken before DDP syncs)

    dataset_train, dataset_eval = _create_datasets(args)

    model = _create_model(args, args.num_classes)
    args.num_classes = model.num_classes
    if args.initial_checkpoint:
        zoo_common.load_model_weights(model, args.initial_checkpoint, '--initial-checkpoint', use_ema=args.use_ema)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    data_config = resolve_data_config(vars(args), model=model, verbose=primary)
    args.input_size = list(data_config['input_size'])
    if primary:
        n_params = sum(p.numel() for p in model.parameters())
        _logger.info(f'Model {args.model}: {n_params / 1e6:.2f}M parameters, {args.num_classes} classes, '
                     f'{args.world_size} process(es) on {device.type}')

    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn:
        if device.type != 'cuda':
            raise CliError('--sync-bn needs CUDA devices (torch has no synchronised BatchNorm on CPU)')
        if args.distributed:
            model = convert_sync_batchnorm(model)
            if primary:
                _logger.info('BatchNorm layers converted to synchronised BatchNorm')

    global_batch = args.batch_size * args.world_size * args.grad_accum_steps
    if args.lr is None:
        scale = args.lr_base_scale or ('sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear')
        ratio = global_batch / args.lr_base_size
        args.lr = args.lr_base * (ratio ** 0.5 if scale == 'sqrt' else ratio)
    optimizer = _create_optimizer(model, args)
    if primary:
        names = {id(p): n for n, p in model.named_parameters()}
        _logger.info(f'Optimizer {args.opt}: {len(optimizer.param_groups)} parameter groups'
                     + (f', layer decay {args.layer_decay}' if args.layer_decay is not None else '') + '\n'
                     + '\n'.join(param_rules.describe_groups(optimizer.param_groups, names)))

    amp_ctx = zoo_common.amp_context(args.amp, args.amp_dtype, device.type)
    loss_scaler = NativeScaler(device=device.type) if args.amp and args.amp_dtype == 'float16' else None

    loader_train, loader_eval = _create_loaders(args, data_config, dataset_train, dataset_eval, device)
    if primary and isinstance(loader_train.sampler, RepeatAugSampler):
        _logger.info(f'Repeated augmentation: each image {args.aug_repeats:g} times, the copies spread over the '
                     f'{args.world_size} process(es); {len(loader_train.sampler)} images per process per epoch')
    mixup_fn, train_loss_fn = _create_mixup_and_loss(args)
    train_loss_fn = train_loss_fn.to(device)

    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args, decreasing_metric=args.eval_metric == 'loss'),
        updates_per_epoch=updates_per_epoch)

    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup, device=device)

    state = TrainState(model, model_ema, lr_scheduler)
    resume_ckpt = _read_resume(args.resume, model, args.model) if args.resume else None
    out_dir = saver = None
    if primary:
        out_dir = _prepare_output_dir(args)
        saver = AtomicCheckpointSaver(
            model=model, optimizer=optimizer, args=args, model_ema=model_ema, amp_scaler=loss_scaler,
            checkpoint_dir=out_dir, recovery_dir=out_dir, decreasing=args.eval_metric == 'loss',
            max_history=max(1, args.checkpoint_hist), task=state)

    start_epoch = 0
    if args.resume:
        start_epoch = _load_resume(resume_ckpt, model, optimizer, loss_scaler, model_ema, state, saver, args)
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)
        if primary:
            _logger.info(f'Resumed from {args.resume}: starting at epoch {start_epoch} of {num_epochs}')
    if primary:
        zoo_common.atomic_write_text(os.path.join(out_dir, 'args.yaml'), yaml.safe_dump(
            {k: v for k, v in vars(args).items() if k != 'config'}, sort_keys=False))

    train_model = model
    if args.token_label:
        try:
            train_model = token_label.TokenLabelModel(model)
        except ValueError as e:
            raise CliError(f'--token-label-dir with --model {args.model}: {e}') from e
    if args.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == 'cuda' else None)
    if args.torch_compile:
        train_model = torch.compile(train_model, backend=args.torch_compile, mode=args.torchcompile_mode)
    eval_model = torch.compile(model, backend=args.torch_compile, mode=args.torchcompile_mode) \
        if args.torch_compile else model

    if primary:
        _logger.info(f'Training {num_epochs} epochs x {updates_per_epoch} updates, global batch {global_batch}, '
                     f'lr {args.lr:.3g}, output {out_dir}')
    row: dict[str, Any] = state.history[-1] if state.history else {}
    for epoch in range(start_epoch, num_epochs):
        # every epoch's random stream is a function of (seed, epoch, rank) alone, so a resumed run is exact on
        # every rank without saving each rank's generator states
        random_seed(args.seed + epoch * 1000003, args.rank)
        if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            mixup_fn.mixup_enabled = False
        if isinstance(loader_train.sampler, (torch.utils.data.DistributedSampler, RepeatAugSampler)):
            loader_train.sampler.set_epoch(epoch)
        elif hasattr(loader_train.dataset, 'set_epoch'):  # timm's iterable datasets
            loader_train.dataset.set_epoch(epoch)
        train_metrics = train_one_epoch(
            epoch, train_model, loader_train, optimizer, train_loss_fn, args, device, lr_scheduler, amp_ctx,
            loss_scaler, model_ema, mixup_fn, updates_per_epoch)
        if not math.isfinite(train_metrics['loss']):
            raise CliError(f'training diverged: mean loss is {train_metrics["loss"]} in epoch {epoch} '
                           '(the last good checkpoint is kept; lower --lr or add --clip-grad)')
        if args.distributed and args.dist_bn:
            distribute_bn(model, args.world_size, args.dist_bn == 'reduce')
        eval_metrics = evaluate(eval_model, loader_eval, args, device, amp_ctx)
        row = {'epoch': epoch, 'lr': optimizer.param_groups[0]['lr'], 'train_loss': train_metrics['loss'],
               'eval_loss': eval_metrics['loss'], 'eval_top1': eval_metrics['top1'], 'eval_top5': eval_metrics['top5'],
               'img_per_s': train_metrics['img_per_s'], 'epoch_time_s': train_metrics['time_s']}
        if model_ema is not None:
            ema_metrics = evaluate(model_ema.module, loader_eval, args, device, amp_ctx)
            row.update({f'ema_{k}': v for k, v in ema_metrics.items()})
            eval_metrics = ema_metrics
        if not math.isfinite(row['eval_loss']):
            raise CliError(f'training diverged: validation loss is {row["eval_loss"]} after epoch {epoch} '
                           '(the last good checkpoint is kept; lower --lr or add --clip-grad)')
        lr_scheduler.step(epoch + 1, eval_metrics[args.eval_metric])
        state.history.append(row)
        if primary:
            saver.save_checkpoint(epoch, metric=eval_metrics[args.eval_metric])
            _write_logs(out_dir, state.history)
            _logger.info(
                f'epoch {epoch + 1}/{num_epochs}  train loss {row["train_loss"]:.4f}  val loss {row["eval_loss"]:.4f}  '
                f'top-1 {row["eval_top1"]:.2f}  top-5 {row["eval_top5"]:.2f}  lr {row["lr"]:.2e}  '
                f'{row["img_per_s"]:.0f} img/s  {row["epoch_time_s"]:.1f}s')

    if primary and state.history:
        if not args.no_plot:
            plot_curves(state.history, os.path.join(out_dir, 'curves.png'), f'{args.model} ({out_dir})')
        _logger.info(f'Done. Best val {args.eval_metric} {saver.best_metric:.2f} (epoch {saver.best_epoch + 1}); '
                     f'checkpoints, summary.csv/json and curves.png in {out_dir}')
    if args.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return row


if __name__ == '__main__':
    sys.exit(zoo_common.run_cli(main))
