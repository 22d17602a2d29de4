# BiFormer + Mask R-CNN + FPN, COCO 1x: the official object_detection/configs/coco/maskrcnn.1x.biformer_*.py
# (UniFormer's settings: AdamW lr 1e-4, weight decay 0.05, none on parameters named *norm*, fp16 with a static loss
# scale of 512). Backbone as the official BiFormer_mm: n_win=16 regions per side with auto_pad (the maps are padded
# to multiples of 16 before each BRA; ours always pads), BatchNorm statistics frozen (norm_eval=True, affine still
# trained), a LayerNorm on every level (official `extra_norms`, timm LayerNorm2d eps 1e-6; ours `norm{i}` with eps
# 1e-5). The per-model config sets model_name, drop_path_rate, init_cfg and the neck's channels.
_base_ = ['../../_base_/zoo_mask_rcnn.py', './coco_instance_1x.py']

model = dict(backbone=dict(model_kwargs=dict(n_win=16), norm_eval=True))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
)
