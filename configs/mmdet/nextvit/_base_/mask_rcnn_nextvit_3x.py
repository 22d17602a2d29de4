# Next-ViT + Mask R-CNN, COCO 3x: 36 epochs, lr steps at 27 and 33, the multi-scale + crop augmentation, 16 images
# per step (8 GPUs x 2), as the official mask_rcnn_nextvit_*_3x.py.
_base_ = ['../../_base_/coco_instance_ms_crop_3x.py', './mask_rcnn_nextvit.py']

# AdamW lr 1e-4, weight decay 0.05, none on norms; fp16 with the official static loss scale of 512.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)}),
)
# 500-iteration linear warm-up from 1e-6.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
