"""Every shipped config builds; per family, a detector and a segmentor train 2 iterations, evaluate, resume and test
through ``downstream.train`` / ``downstream.test`` on tiny synthetic COCO- and ADE20K-format datasets (CPU)."""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmcv.ops')

import timm  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from PIL import Image  # noqa: E402

from downstream import mmengine_safe_globals  # noqa: E402
from downstream import test as ds_test  # noqa: E402
from downstream import train as ds_train  # noqa: E402
from downstream._runner import load_config, read_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
ALL_CONFIGS = sorted(p for p in CONFIGS.glob('mm*/*/*.py') if p.parent.name != '_base_')
# One detection and one segmentation config per family: the smallest published variant (Next-ViT, a timm model whose
# detection settings the generic tests cover: its segmentation config only, which adds BatchNorm output norms, the
# model's final norm, SyncBN and the reparameterized test).
E2E = {
    'nat': ('mmdet/nat/mask_rcnn_nat_mini_3x_coco.py', 'mmseg/nat/upernet_nat_mini_512x512_160k_ade20k.py'),
    'dinat': ('mmdet/dinat/mask_rcnn_dinat_mini_3x_coco.py', 'mmseg/dinat/upernet_dinat_mini_512x512_160k_ade20k.py'),
    'dinat_s': ('mmdet/dinat_s/mask_rcnn_dinat_s_tiny_3x_coco.py',
                'mmseg/dinat_s/upernet_dinat_s_tiny_512x512_160k_ade20k.py'),
    'nextvit': (None, 'mmseg/nextvit/upernet_nextvit_small_512x512_160k_ade20k.py'),
    'moat': ('mmdet/moat/cascade_mask_rcnn_tiny_moat_0_fpn_3x_coco.py',
             'mmseg/moat/deeplabv3plus_tiny_moat_0_512x512_160k_ade20k.py'),
    'transnext': ('mmdet/transnext/mask_rcnn_transnext_tiny_fpn_1x_coco.py',
                  'mmseg/transnext/upernet_transnext_tiny_512x512_160k_ade20k.py'),
}
E2E_CASES = [(family, task) for family, configs in sorted(E2E.items()) for task, config in zip(('mmdet', 'mmseg'),
                                                                                             configs) if config]
SHRUNK_DEPTHS = {'nextvit': [1, 1, 5, 1]}  # Next-ViT's stage 3 repeats a 5-block pattern
SIZE = (48, 64)  # (height, width) of the synthetic images; not a multiple of the backbones' strides


pytestmark = pytest.mark.usefixtures('one_thread')


def _model_name(cfg: Config) -> str:
    return cfg.model.backbone.model_name


def test_configs_cover_the_papers():
    assert len([p for p in ALL_CONFIGS if p.parts[-3] == 'mmdet']) == 86
    assert len([p for p in ALL_CONFIGS if p.parts[-3] == 'mmseg']) == 61


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=lambda p: p.name)
def test_config_builds_its_model(path):
    cfg = read_config(str(path))
    if not timm.is_model(_model_name(cfg)):
        pytest.skip(f'{_model_name(cfg)} is not registered')
    init_default_scope(cfg.default_scope)
    from mmengine.registry import MODELS

    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    head = cfg.model.decode_head if 'decode_head' in cfg.model else None
    if 'neck' in cfg.model:
        assert backbone.channels == cfg.model.neck.in_channels
    elif isinstance(head.in_channels, int):  # DeepLabv3+: the ASPP on one level, the decoder on the first
        assert head.in_channels == backbone.channels[head.in_index]
        assert head.get('c1_in_channels', backbone.channels[0]) == backbone.channels[0]
    else:
        assert backbone.channels == head.in_channels
    aux = cfg.model.get('auxiliary_head')
    if aux is not None:
        assert aux.in_channels == backbone.channels[aux.in_index]
    assert backbone.strides == [4, 8, 16, 32]


def _write_coco(root: Path, split: str, num_images: int, rng: np.random.Generator) -> None:
    (root / f'{split}2017').mkdir(parents=True)
    (root / 'annotations').mkdir(exist_ok=True)
    images, annotations = [], []
    height, width = SIZE
    for i in range(num_images):
        name = f'{i:012d}.jpg'
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / f'{split}2017' / name)
        images.append(dict(id=i + 1, file_name=name, height=height, width=width))
        for j, (x, y, w, h) in enumerate([(4, 6, 20, 18), (30, 10, 24, 30)]):
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=j + 1, iscrowd=0, area=float(w * h),
                bbox=[x, y, w, h], segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    categories = [dict(id=1, name='person'), dict(id=2, name='bicycle')]
    ann = dict(images=images, annotations=annotations, categories=categories)
    (root / 'annotations' / f'instances_{split}2017.json').write_text(json.dumps(ann))


def _write_ade(root: Path, split: str, num_images: int, rng: np.random.Generator) -> None:
    (root / 'images' / split).mkdir(parents=True)
    (root / 'annotations' / split).mkdir(parents=True)
    height, width = SIZE
    for i in range(num_images):
        name = f'ADE_{split}_{i:08d}'
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
            root / 'images' / split / f'{name}.jpg')
        label = np.zeros((height, width), dtype=np.uint8)  # 0 = ignored after reduce_zero_label
        label[:, : width // 2] = 1 + i
        label[height // 2:, width // 2:] = 5
        Image.fromarray(label).save(root / 'annotations' / split / f'{name}.png')


def _shrunk_backbone(cfg: Config) -> dict:
    """The shipped backbone with fewer blocks per stage (dilation schedules cut to match), no pretrained download."""
    kwargs = dict(cfg.model.backbone.get('model_kwargs') or {})
    depths = next((d for f, d in SHRUNK_DEPTHS.items() if _model_name(cfg).startswith(f)), [1, 1, 2, 1])
    kwargs['depths'] = depths
    if 'dilations' in kwargs:  # keeps a dilated block in stage 3: dilation * kernel > map size exercises padding
        kwargs['dilations'] = [list(stage[:n]) for stage, n in zip(kwargs['dilations'], depths)]
    return dict(init_cfg=None, model_kwargs=kwargs)


def _tiny_det_config(base: Path, path: Path) -> None:
    """Small images, light pipelines and narrow heads on top of the shipped config (same model types and recipe)."""
    cfg = read_config(str(base))
    backbone = _shrunk_backbone(cfg)
    narrow = dict(in_channels=32, conv_out_channels=32, fc_out_channels=64, num_classes=2)
    bbox_head = cfg.model.roi_head.bbox_head
    if isinstance(bbox_head, list):  # Cascade R-CNN: a list replaces the base's, so every stage's head in full
        bbox_head = [dict(h.to_dict(), **narrow) for h in bbox_head]
    else:
        bbox_head = narrow
    path.write_text(f"""
_base_ = [{str(base)!r}]
model = dict(
    backbone={backbone!r},
    neck=dict(out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head={bbox_head!r},
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=2)),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))  # an untrained model scores below 0.05: keep its boxes for the metric
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 48), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
metainfo = dict(classes=('person', 'bicycle'))
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline, metainfo=metainfo))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline, metainfo=metainfo))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
""")


def _tiny_seg_config(base: Path, path: Path) -> None:
    backbone = _shrunk_backbone(read_config(str(base)))
    path.write_text(f"""
_base_ = [{str(base)!r}]
model = dict(
    backbone={backbone!r},
    data_preprocessor=dict(size=(48, 64)),  # not a multiple of 32: the backbone pads and crops inside
    decode_head=dict(channels=32),
    auxiliary_head=dict(channels=32))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")


def _run(task: str, config: Path, data_root: Path, work_dir: Path, extra: list) -> tuple[Path, dict]:
    common = ['--work-dir', str(work_dir), '--cfg-options', f'data_root={data_root}/'] + extra
    runner = ds_train.main([str(config)] + common)
    assert runner.iter == 2
    checkpoint = work_dir / ('epoch_1.pth' if task == 'mmdet' else 'iter_2.pth')
    assert checkpoint.is_file()

    # Resume from that checkpoint and train one more step (mmengine checkpoints under torch's weights_only default).
    more = ['train_cfg.max_epochs=2'] if task == 'mmdet' else ['train_cfg.max_iters=3', 'train_cfg.val_interval=3']
    resumed = ds_train.main([str(config), '--resume', str(checkpoint)] + common + more)
    assert resumed.iter == (4 if task == 'mmdet' else 3)

    metrics = ds_test.main([str(config), str(checkpoint), '--work-dir', str(work_dir / 'test'),
                            '--cfg-options', f'data_root={data_root}/'])
    keys = ('coco/bbox_mAP', 'coco/segm_mAP') if task == 'mmdet' else ('mIoU',)
    for key in keys:
        assert key in metrics and np.isfinite(metrics[key])
    return checkpoint, metrics


def _official_nat_layout(key: str) -> str:
    """Our backbone key -> the official NAT detection backbone's (downsampling ends level i instead of starting i+1)."""
    prefix = 'backbone.model.'
    if not key.startswith(prefix):
        return key
    key = key[len(prefix):]
    m = re.match(r'^stages_(\d+)\.downsample\.(.*)$', key)
    if m:
        return f'backbone.levels.{int(m.group(1)) - 1}.downsample.{m.group(2)}'
    return 'backbone.' + re.sub(r'^stages_(\d+)\.', r'levels.\1.', key)


@pytest.mark.parametrize('family, task', E2E_CASES)
def test_train_eval_resume_test(tmp_path, family, task):
    base = CONFIGS / E2E[family][0 if task == 'mmdet' else 1]
    name = read_config(str(base)).model.backbone.model_name
    if not timm.is_model(name):
        pytest.skip(f'{name} is not registered')
    rng = np.random.default_rng(0)
    data_root = tmp_path / 'data'
    config = tmp_path / 'tiny.py'
    if task == 'mmdet':
        for split in ('train', 'val'):
            _write_coco(data_root, split, 2, rng)
        _tiny_det_config(base, config)
    else:
        for split in ('training', 'validation'):
            _write_ade(data_root, split, 2, rng)
        _tiny_seg_config(base, config)
    checkpoint, metrics = _run(task, config, data_root, tmp_path / 'work', [])
    if family == 'nat':
        # The same weights saved as an official NAT detection/segmentation checkpoint (backbone.levels.N...,
        # backbone.norm{i}) load strictly in downstream.test and give the same metrics.
        with mmengine_safe_globals():
            state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
        official = {_official_nat_layout(k): v for k, v in state.items()}
        assert any(k.startswith('backbone.levels.') for k in official)
        path = tmp_path / 'official.pth'
        torch.save({'state_dict': official, 'meta': {'epoch': 36}}, path)
        again = ds_test.main([str(config), str(path), '--work-dir', str(tmp_path / 'test_official'),
                              '--cfg-options', f'data_root={data_root}/'])
        assert again == pytest.approx(metrics)
    if family == 'nextvit':  # the backbone fused for deployment (BN merge) gives the same predictions
        fused = ds_test.main([str(config), str(checkpoint), '--reparameterize', '--work-dir', str(tmp_path / 'fused'),
                              '--cfg-options', f'data_root={data_root}/'])
        assert fused == pytest.approx(metrics, abs=1e-2)


def test_bad_input_fails_before_training(tmp_path):
    config = CONFIGS / E2E['nat'][0]
    with pytest.raises(FileNotFoundError, match='data_root'):
        ds_train.main([str(config), '--work-dir', str(tmp_path), '--cfg-options', f'data_root={tmp_path}/none/'])
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        ds_test.main([str(config), str(tmp_path / 'none.pth')])
    with pytest.raises(FileNotFoundError, match='config file not found'):
        ds_train.main([str(tmp_path / 'none.py')])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='--amp needs a CUDA device'):
            ds_train.main([str(config), '--amp', '--work-dir', str(tmp_path)])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    """``torchrun ... -m downstream.train --launcher pytorch``: 2 CPU processes (gloo), then distributed testing."""
    base = CONFIGS / E2E['nat'][0]
    if not timm.is_model(read_config(str(base)).model.backbone.model_name):
        pytest.skip('nat_mini is not registered')
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        _write_coco(tmp_path / 'data', split, 4, rng)
    config = tmp_path / 'tiny.py'
    _tiny_det_config(base, config)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(CONFIGS.parent))
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2', '--master-port',
                str(_free_port())]
    options = ['--launcher', 'pytorch', '--cfg-options', f'data_root={tmp_path}/data/']
    work = tmp_path / 'work'
    run = subprocess.run(torchrun + ['-m', 'downstream.train', str(config), '--work-dir', str(work)] + options,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'Epoch(train) [1][2/2]' in run.stdout + run.stderr  # 4 images, 2 processes, batch 1: 2 steps each
    torchrun[-1] = str(_free_port())
    run = subprocess.run(torchrun + ['-m', 'downstream.test', str(config), str(work / 'epoch_1.pth'), '--work-dir',
                                     str(tmp_path / 'test')] + options, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'coco/segm_mAP' in run.stdout + run.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU adaptation of GPU-oriented configs')
def test_gpu_configs_adapt_to_cpu():
    args = argparse.Namespace(config=str(CONFIGS / 'mmdet/dinat/cascade_mask_rcnn_dinat_mini_3x_coco.py'),
                              cfg_options={'data_root': '/elsewhere/coco'}, launcher='pytorch', work_dir=None)
    cfg = load_config(args)
    assert {head.norm_cfg.type for head in cfg.model.roi_head.bbox_head} == {'BN'}  # SyncBN needs GPUs
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    assert cfg.env_cfg.dist_cfg.backend == 'gloo' and cfg.model_wrapper_cfg.device_ids is None
    ravlt = load_config(argparse.Namespace(config=str(CONFIGS / 'mmdet/ravlt/mask_rcnn_ravlt_tiny_fpn_1x_coco.py'),
                                           cfg_options=None, launcher='pytorch', work_dir=None))
    assert read_config(str(CONFIGS / 'mmdet/ravlt/mask_rcnn_ravlt_tiny_fpn_1x_coco.py')).sync_bn == 'torch'
    assert ravlt.sync_bn is None  # mmengine's SyncBatchNorm conversion needs GPUs
    # data_root is the one variable: datasets and the evaluator follow it
    assert cfg.train_dataloader.dataset.data_root == '/elsewhere/coco'
    assert cfg.val_evaluator.ann_file == '/elsewhere/coco/annotations/instances_val2017.json'


def test_test_time_augmentation_and_painted_predictions(tmp_path):
    """``downstream.test --tta --show-dir``: multi-scale + flip mIoU through the config's TTA model, and one painted
    prediction per test image; a config without TTA (detection) is refused with the reason."""
    base = CONFIGS / E2E['nat'][1]
    rng = np.random.default_rng(0)
    data_root = tmp_path / 'data'
    for split in ('training', 'validation'):
        _write_ade(data_root, split, 2, rng)
    config = tmp_path / 'tiny.py'
    _tiny_seg_config(base, config)
    with config.open('a') as f:  # the zoo's TTA scales (2048 x 512 x 0.5 ... 1.75) are far too big for this test
        f.write("""
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.25)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]]),
]
""")
    common = ['--cfg-options', f'data_root={data_root}/']
    ds_train.main([str(config), '--work-dir', str(tmp_path / 'work')] + common)
    checkpoint = str(tmp_path / 'work' / 'iter_2.pth')
    shown = tmp_path / 'shown'
    metrics = ds_test.main([str(config), checkpoint, '--tta', '--show-dir', str(shown), '--work-dir',
                            str(tmp_path / 'tta')] + common)
    assert np.isfinite(metrics['mIoU'])
    assert len(list(shown.rglob('*.png'))) == 2

    cfg = read_config(str(base))
    assert cfg.tta_pipeline[1]['transforms'][0][0] == dict(type='Resize', scale=(1024, 256), keep_ratio=True)
    det = load_config(ds_test.parse_args([str(CONFIGS / E2E['nat'][0]), checkpoint]))
    with pytest.raises(ValueError, match='--tta: the config defines no tta_model / tta_pipeline'):
        ds_test.use_tta(det)
    ds_test.paint_predictions(det, str(tmp_path / 'det'), 5)
    assert det.default_hooks.visualization['test_out_dir'] == str(tmp_path / 'det')
    assert det.default_hooks.visualization['draw'] and det.default_hooks.visualization['interval'] == 5


OPENMMLAB_TOOLS = {  # one detector and one segmentor family in CI (others were run by hand: see the README)
    'mmdet': ('nat', 'data/coco', 'epoch_1.pth'),
    'mmseg': ('dinat', 'data/ade/ADEChallengeData2016', 'iter_2.pth'),
}


def _pickled_globals(path: Path) -> set[str]:
    """'module.name' of every global a torch checkpoint's pickle asks for."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
            strings.append(arg)
        elif op.name == 'STACK_GLOBAL':
            found.add('.'.join(strings[-2:]))
        elif op.name == 'GLOBAL':
            found.add(arg.replace(' ', '.'))
    return {name.replace('__builtin__.', 'builtins.') for name in found}


@pytest.mark.parametrize('task', sorted(OPENMMLAB_TOOLS))
def test_openmmlab_own_tools(tmp_path, task):
    """mmdet's / mmseg's own tools/train.py and tools/test.py (what ``mim train/test`` run) on a user config that
    inherits a zoo config, with nothing but its ``custom_imports``: train, test the checkpoint, then resume (det) or
    start from it with ``load_from`` (seg), under torch's weights_only default. The checkpoints hold no global
    beyond torch's defaults and downstream.safe_globals' list."""
    import importlib

    from torch._weights_only_unpickler import _get_allowed_globals

    from downstream.safe_globals import mmengine_checkpoint_globals

    family, data_dir, checkpoint = OPENMMLAB_TOOLS[task]
    base = CONFIGS / E2E[family][0 if task == 'mmdet' else 1]
    tools = Path(importlib.import_module(task).__file__).parent / '.mim' / 'tools'
    rng = np.random.default_rng(0)
    config = tmp_path / 'user.py'
    if task == 'mmdet':
        for split in ('train', 'val'):
            _write_coco(tmp_path / data_dir, split, 2, rng)
        _tiny_det_config(base, config)
    else:
        for split in ('training', 'validation'):
            _write_ade(tmp_path / data_dir, split, 2, rng)
        _tiny_seg_config(base, config)
    # What a CPU user writes: plain fp32 (mmengine's AmpOptimWrapper needs a GPU); everything else is the zoo's.
    optim_wrapper = read_config(str(config)).optim_wrapper.to_dict()
    optim_wrapper.pop('loss_scale', None)
    with config.open('a') as f:
        f.write(f'\noptim_wrapper = {dict(optim_wrapper, type="OptimWrapper", _delete_=True)!r}\n')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(CONFIGS.parent))

    def tool(name, *args):
        run = subprocess.run([sys.executable, str(tools / name), str(config), *map(str, args)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        return run.stdout + run.stderr

    tool('train.py', '--work-dir', 'work')
    saved = tmp_path / 'work' / checkpoint
    metric = 'coco/bbox_mAP' if task == 'mmdet' else 'mIoU'
    assert metric in tool('test.py', saved, '--work-dir', 'test')
    if task == 'mmdet':
        out = tool('train.py', '--work-dir', 'work', '--resume', '--cfg-options', 'train_cfg.max_epochs=2')
        assert 'resumed epoch: 1, iter: 2' in out and (tmp_path / 'work' / 'epoch_2.pth').is_file()
    else:
        out = tool('train.py', '--work-dir', 'again', '--cfg-options', f'load_from={saved}', 'train_cfg.max_iters=1')
        assert f'Load checkpoint from {saved}' in out and (tmp_path / 'again' / 'iter_1.pth').is_file()

    allowed = {f'{g[0].__module__}.{g[0].__name__}' if isinstance(g, tuple) else f'{g.__module__}.{g.__name__}'
               for g in mmengine_checkpoint_globals()}
    allowed |= {g[1] for g in mmengine_checkpoint_globals() if isinstance(g, tuple)}
    needed = _pickled_globals(saved) - set(_get_allowed_globals())
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in needed and needed <= allowed, needed - allowed
