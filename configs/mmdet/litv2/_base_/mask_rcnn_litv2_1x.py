# LITv2 + Mask R-CNN + FPN, COCO 1x: the official detection/configs/litv2/mask_rcnn_litv2_*_fpn_1x_coco.py
# (AdamW lr 2e-4, weight decay 1e-4, none on norms, fp16). The per-model config sets model_name, drop_path_rate,
# init_cfg, the neck's channels and, for the *_ws_4 configs, the stage-3 HiLo window.
_base_ = ['../../_base_/zoo_mask_rcnn.py', './coco_instance_1x.py']

model = dict(backbone=dict(out_norm=(False, True, True, True)))  # the official backbone: no norm on level 0

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
)
