# DiNAT-Large + Cascade Mask R-CNN, COCO 3x multi-scale crop. Paper (official checkpoint): 55.3 box AP, 47.8 mask AP.
_base_ = ['../_base_/zoo_cascade_mask_rcnn.py', '../_base_/coco_instance_ms_crop_3x.py']

model = dict(
    backbone=dict(
        model_name='dinat_large',
        drop_path_rate=0.6,
        # the papers' detection dilations (larger than the 224px classification ones)
        model_kwargs=dict(dilations=[[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]]),  # noqa: E501
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_large_in22k_224.pth'),  # noqa: E501
    ),
    neck=dict(in_channels=[192, 384, 768, 1536]))

# trained in float32 (no mixed precision), as the paper
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=7.5e-05, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
)
