"""Train a detector or segmentor with a zoo backbone: ``python -m downstream.train CONFIG [options]``.

One GPU: ``python -m downstream.train configs/mmdet/nat/mask_rcnn_nat_tiny_3x_coco.py``.
Several GPUs / nodes: ``torchrun --nproc-per-node 8 -m downstream.train CONFIG --launcher pytorch``.
"""
import argparse
import os.path as osp

import torch
from mmengine.runner import Runner

from ._runner import add_common_args, check_checkpoint_file, check_data_paths, load_config, process_group
from .checkpoint import mmengine_safe_globals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmdet/mmseg config file')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='CHECKPOINT',
        help='resume training: from CHECKPOINT, or (no value) from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (AmpOptimWrapper, dynamic loss scale)')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Runner:
    """Train as the command line asks; returns the finished runner (for programmatic use and tests)."""
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        if not torch.cuda.is_available():
            raise ValueError('--amp needs a CUDA device (the configs switch mixed precision off on CPU)')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_checkpoint_file(args.resume, 'resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    elif cfg.get('load_from'):
        check_checkpoint_file(cfg.load_from, 'load_from checkpoint')
    loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else [])
    check_data_paths(cfg, loaders, ['val_evaluator'] if cfg.get('val_cfg') else [])
    cfg.work_dir = osp.abspath(cfg.work_dir)

    with process_group(cfg):
        runner = Runner.from_cfg(cfg)
        # mmengine 0.10.7 calls torch.load without weights_only; allow-list what its checkpoints hold (checkpoint.py).
        with mmengine_safe_globals():
            runner.train()
    return runner


if __name__ == '__main__':
    main()
