# BiFormer + Semantic FPN on ADE20K, 512x512 crops, 80k iterations: the official
# semantic_segmentation/configs/ade20k/sfpn.biformer_*.py (UniFormer's settings, halved iterations at twice the
# lr for 8 GPUs: AdamW lr 2e-4, weight decay 1e-4 on every parameter, cosine decay to 1e-8 of the lr after a
# 1000-iteration linear warm-up from 0.1, fp16 with a static loss scale of 512), 32 images per step (8 GPUs x 4).
# Backbone as the official BiFormer_mm: n_win=8 regions per side ("training resolution is 512") with auto_pad,
# BatchNorm synchronised across GPUs (sync_bn; the official backbone converts itself), a LayerNorm on every level
# (official `extra_norms`, eps 1e-6; ours `norm{i}`, eps 1e-5). Not reproduced: the official test pipeline's
# AlignResize (mmseg 0.x, rounds the test scale to multiples of 32); here mmseg's Resize to (2048, 512).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)

# The one place to point at ADEChallengeData2016 (images/, annotations/); `--cfg-options data_root=...` with
# downstream.train/test rewrites every dataset path below as well.
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        model_kwargs=dict(n_win=8),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.15,
        out_norm=True,
        pad_multiple=1,  # BiFormer takes any size (auto_pad); no padding beyond the data preprocessor's
        frozen_stages=-1,
        with_cp=False,
    ),
    decode_head=dict(num_classes=150))
sync_bn = 'torch'

train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
)
# mmcv's CosineAnnealing with warm-up: the warm-up factor multiplies the cosine of the whole run
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', eta_min=0.0002 * 1e-8, T_max=80000, by_epoch=False, begin=0, end=80000),
]
