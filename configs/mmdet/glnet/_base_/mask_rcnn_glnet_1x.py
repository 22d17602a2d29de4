# GLNet + Mask R-CNN + FPN, COCO 1x. Ours: the official repo has no detection code or configs, and the paper's
# detection settings were not read here; AdamW lr 1e-4, weight decay 0.05, none on norms, fp16 (the common
# Swin-style 1x setting). The per-model config sets model_name, drop_path_rate, init_cfg and the neck's channels.
_base_ = ['../../_base_/zoo_mask_rcnn.py', './coco_instance_1x.py']

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
)
