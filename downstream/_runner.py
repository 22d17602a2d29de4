"""Shared set-up of the train/test entry points: config loading, input checks and environment fixes."""
import argparse
import contextlib
import os
import os.path as osp
from collections.abc import Iterator
from typing import Any

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='folder for logs and checkpoints (default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default={},
        help="override config entries, e.g. --cfg-options train_dataloader.batch_size=4 data_root=/data/coco/")
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help="'pytorch' under torchrun for multi-GPU / multi-node runs")
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0, help=argparse.SUPPRESS)


@contextlib.contextmanager
def fast_base_config_lookup() -> Iterator[None]:
    """Resolve ``mmdet::_base_/...`` / ``mmseg::_base_/...`` without scanning the packages' model metafiles.

    mmengine 0.10.7 first looks every ``pkg::path`` up in all of the package's ``metafile.yml`` files (200+ YAML
    files, seconds per lookup) and only then, for ``_base_/`` paths, which are never listed there, falls back to
    the file itself. Answering "not listed" at once for ``_base_/`` paths gives the same result in milliseconds.
    """
    import mmengine.config.config as mm_config

    original = mm_config._get_external_cfg_path

    def lookup(package_path: str, cfg_file: str) -> str:
        if cfg_file.startswith('_base_/'):
            raise ValueError('base configs are not listed in metafiles')  # mmengine then takes the file path
        return original(package_path, cfg_file)

    mm_config._get_external_cfg_path = lookup
    try:
        yield
    finally:
        mm_config._get_external_cfg_path = original


def read_config(path: str) -> Config:
    """``Config.fromfile`` with a clear error for a missing file and fast ``pkg::_base_`` lookups."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    with fast_base_config_lookup():
        return Config.fromfile(path)


def load_config(args: argparse.Namespace) -> Config:
    cfg = read_config(args.config)
    old_root = cfg.get('data_root')
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    new_root = cfg.get('data_root')
    if isinstance(old_root, str) and isinstance(new_root, str) and new_root != old_root:
        for key in cfg.keys():  # Config is not a dict; its values are
            _move_data_root(cfg[key], old_root, new_root)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    _adapt_to_device(cfg)
    return cfg


def _move_data_root(node: Any, old: str, new: str) -> None:
    """Make the config's top-level ``data_root`` the one variable: rewrite every path that was derived from it.

    mmengine resolves ``data_root=data_root`` when the config is read, so overriding ``data_root`` alone would leave
    the datasets and evaluators on the old folder.
    """
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, (dict, list)):
            _move_data_root(value, old, new)
        elif key == 'data_root' and value == old:
            node[key] = new
        elif key == 'ann_file' and isinstance(value, str) and value.startswith(old):
            node[key] = osp.join(new, value[len(old):].lstrip('/'))


def _adapt_to_device(cfg: Config) -> None:
    """Let GPU-oriented configs (NCCL, AMP, SyncBN) also run on a CPU-only machine, saying so."""
    if torch.cuda.is_available():
        return
    if cfg.launcher != 'none':
        # mmengine's launchers always pin a CUDA device and DDP to device_ids=[LOCAL_RANK]: on CPU the process group
        # is started here (gloo, see process_group) and DDP gets no device ids.
        cfg.env_cfg = dict(cfg.get('env_cfg') or {}, dist_cfg=dict(backend='gloo'))
        wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = dict(wrapper, **(cfg.get('model_wrapper_cfg') or {}), device_ids=None)
        print_log('no CUDA device: distributed training on CPU with the gloo backend', logger='current')
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is not None and optim_wrapper.get('type') == 'AmpOptimWrapper':
        optim_wrapper['type'] = 'OptimWrapper'
        optim_wrapper.pop('loss_scale', None)
        print_log('no CUDA device: mixed precision (AmpOptimWrapper) disabled', logger='current')
    if cfg.get('sync_bn'):  # mmengine would convert every BatchNorm under DDP, which needs CUDA
        cfg.sync_bn = None
        print_log('no CUDA device: sync_bn disabled', logger='current')
    for key in cfg.keys():
        _replace_sync_bn(cfg[key])


@contextlib.contextmanager
def process_group(cfg: Config) -> Iterator[None]:
    """The run's process group: started here for ``--launcher pytorch`` on a machine without CUDA (gloo, torchrun's
    env:// vars; mmengine starts NCCL itself), and left together when the run succeeds: every rank waits for the
    others, then the group is destroyed (a gloo group torn down implicitly at interpreter exit, after a peer has
    already gone, can abort the process). A failing run raises without waiting for ranks that may be gone."""
    if cfg.launcher == 'pytorch' and not torch.cuda.is_available() and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')
    yield
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _replace_sync_bn(node: Any) -> None:
    """torch's SyncBatchNorm needs GPUs: use BN on CPU (mmengine reverts SyncBN itself only when not distributed)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'norm_cfg' and isinstance(value, dict) and value.get('type') == 'SyncBN':
                value['type'] = 'BN'
            else:
                _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _replace_sync_bn(value)


def _datasets(node: Any) -> Iterator[dict]:
    """Dataset configs inside a dataloader config, through wrappers (RepeatDataset, ConcatDataset, ...)."""
    if isinstance(node, dict):
        if 'data_root' in node or 'ann_file' in node or 'data_prefix' in node:
            yield node
        for key in ('dataset', 'datasets'):
            child = node.get(key)
            for item in child if isinstance(child, (list, tuple)) else [child]:
                yield from _datasets(item)


def _join(root: str, path: str) -> str:
    return path if osp.isabs(path) or not root else osp.join(root, path)


def check_data_paths(cfg: Config, loaders: list[str], evaluators: list[str]) -> None:
    """Fail before any training/testing when a dataset root, annotation file or image folder does not exist."""
    problems = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg:
            continue
        for dataset in _datasets(loader_cfg.get('dataset')):
            root = dataset.get('data_root') or ''
            if root and not osp.isdir(root):
                problems.append(f'{loader}: data_root {root!r} does not exist')
                continue
            ann_file = dataset.get('ann_file')
            if ann_file and not osp.isfile(_join(root, ann_file)):
                problems.append(f'{loader}: ann_file {_join(root, ann_file)!r} does not exist')
            for key, prefix in (dataset.get('data_prefix') or {}).items():
                if prefix and not osp.isdir(_join(root, prefix)):
                    problems.append(f'{loader}: data_prefix.{key} {_join(root, prefix)!r} does not exist')
    for evaluator in evaluators:
        metrics = cfg.get(evaluator)
        for metric in metrics if isinstance(metrics, (list, tuple)) else [metrics]:
            ann_file = metric.get('ann_file') if isinstance(metric, dict) else None
            if ann_file and not osp.isfile(ann_file):
                problems.append(f'{evaluator}: ann_file {ann_file!r} does not exist')
    if problems:
        raise FileNotFoundError('dataset paths missing (set data_root in the config or with --cfg-options):\n  '
                                + '\n  '.join(problems))


def check_checkpoint_file(path: str, what: str) -> None:
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    if os.path.getsize(path) == 0:
        raise RuntimeError(f'{what} is empty: {path}')
