# Next-ViT + Mask R-CNN, COCO 1x: 12 epochs, lr steps at 8 and 11, single-scale 1333x800 with flips, 16 images per
# step (8 GPUs x 2), as the official mask_rcnn_nextvit_*_1x.py (whose 1x optimizer also exempts 'bn' keys from weight
# decay: the names of mmcv's ConvModule norms; this detector has none outside the backbone, where 'norm' covers all).
_base_ = [
    './mask_rcnn_nextvit.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# The one place to point at your COCO folder (annotations/, train2017/, val2017/); `--cfg-options data_root=...`
# with downstream.train/test rewrites every dataset and evaluator path below as well.
data_root = 'data/coco/'
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
auto_scale_lr = dict(enable=False, base_batch_size=16)

# AdamW lr 1e-4, weight decay 0.05, none on norms; fp16 with the official static loss scale of 512.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
)
# 500-iteration linear warm-up from 1e-6.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
