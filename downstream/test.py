"""Evaluate a trained detector or segmentor: ``python -m downstream.test CONFIG CHECKPOINT [options]``.

The checkpoint is ours (``downstream.train``) or an official one whose backbone is stored in the official layout
(e.g. NAT/DiNAT detection checkpoints: ``backbone.levels.N...``, ``backbone.norm0``); it must match the config
exactly (strict loading).
Several GPUs: ``torchrun --nproc-per-node 8 -m downstream.test CONFIG CHECKPOINT --launcher pytorch``.
"""
import argparse

from mmengine.runner import Runner

from ._runner import add_common_args, check_checkpoint_file, check_data_paths, load_config, process_group
from .checkpoint import mmengine_safe_globals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmdet/mmseg config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    check_checkpoint_file(args.checkpoint, 'checkpoint')
    cfg = load_config(args)
    cfg.load_from = None  # loaded below, strictly
    cfg.resume = False
    check_data_paths(cfg, ['test_dataloader'], ['test_evaluator'])

    with process_group(cfg):
        runner = Runner.from_cfg(cfg)
        with mmengine_safe_globals():
            runner.load_checkpoint(args.checkpoint, map_location='cpu', strict=True)
            return runner.test()


if __name__ == '__main__':
    main()
