"""Evaluate a trained detector or segmentor: ``python -m downstream.test CONFIG CHECKPOINT [options]``.

The checkpoint is ours (``downstream.train``) or an official one whose backbone is stored in the official layout
(e.g. NAT/DiNAT detection checkpoints: ``backbone.levels.N...``, ``backbone.norm0``); it must match the config
exactly (strict loading).
Several GPUs: ``torchrun --nproc-per-node 8 -m downstream.test CONFIG CHECKPOINT --launcher pytorch``.
``--tta`` gives the multi-scale + flip numbers (the config's ``tta_model`` / ``tta_pipeline``: mmseg's
``TestTimeAug``); ``--show-dir DIR`` writes the painted predictions, which are worth a look before any metric;
``--reparameterize`` evaluates the backbone fused for deployment (:meth:`AttnZooBackbone.reparameterize`, e.g.
Next-ViT's BN merge).
"""
import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner

from ._runner import add_common_args, check_checkpoint_file, check_data_paths, load_config, process_group
from .backbone import AttnZooBackbone
from .checkpoint import mmengine_safe_globals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmdet/mmseg config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--tta', action='store_true',
                        help="multi-scale + flip test with the config's tta_model and tta_pipeline (the papers' MS "
                             'numbers; the zoo ADE20K configs use the official scales x 0.5 ... 1.75)')
    parser.add_argument('--show-dir', help='write painted predictions (input | prediction images) into this folder')
    parser.add_argument('--show-interval', type=int, default=1, help='with --show-dir: paint every N-th image')
    parser.add_argument('--reparameterize', action='store_true',
                        help="fuse the backbone for inference after loading (timm's reparameterize_model, e.g. "
                             "Next-ViT's BN merge) and test that")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.show_interval < 1:
        parser.error(f'--show-interval must be >= 1, got {args.show_interval}')
    return args


def use_tta(cfg: Config) -> None:
    """Wrap the model in the config's TTA model and test through its TTA pipeline, as mmdet/mmseg's tools do."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if cfg.get(k) is None]
    if missing:
        raise ValueError(f'--tta: the config defines no {" / ".join(missing)} (mmseg configs inherit them from '
                         "mmseg::_base_; the detection papers report no test-time augmentation)")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def paint_predictions(cfg: Config, folder: str, interval: int) -> None:
    """Turn on the config's visualization hook, writing every ``interval``-th painted test image into ``folder``."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise ValueError('--show-dir: the config has no default_hooks.visualization hook to paint predictions with')
    hook.update(draw=True, interval=interval)
    folder = osp.abspath(folder)
    if hook.get('type') == 'DetVisualizationHook':
        hook['test_out_dir'] = folder  # mmdet writes <folder>/<image name>
    else:
        # mmseg's visualizer writes <folder>/vis_data/vis_image/<name>_<i>.png; visualizers are per-name singletons,
        # so name it after its folder (an earlier run in this process may hold the default name)
        cfg.visualizer.update(save_dir=folder, name=f'show:{folder}')


def reparameterize_backbones(model) -> None:
    """Fuse every :class:`AttnZooBackbone` inside ``model`` for inference (after its weights are loaded)."""
    backbones = [m for m in model.modules() if isinstance(m, AttnZooBackbone)]
    if not backbones:
        raise ValueError('--reparameterize: the model has no AttnZooBackbone')
    for backbone in backbones:
        backbone.reparameterize()


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    check_checkpoint_file(args.checkpoint, 'checkpoint')
    cfg = load_config(args)
    cfg.load_from = None  # loaded below, strictly
    cfg.resume = False
    check_data_paths(cfg, ['test_dataloader'], ['test_evaluator'])
    if args.tta:
        use_tta(cfg)
    if args.show_dir:
        paint_predictions(cfg, args.show_dir, args.show_interval)

    with process_group(cfg):
        runner = Runner.from_cfg(cfg)
        with mmengine_safe_globals():
            runner.load_checkpoint(args.checkpoint, map_location='cpu', strict=True)
            if args.reparameterize:
                reparameterize_backbones(runner.model)
            return runner.test()


if __name__ == '__main__':
    main()
