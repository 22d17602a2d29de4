# Agent-Swin's COCO 3x (downstream/detection/configs/agent_swin/*_3x_*.py): the DETR-style multi-scale + crop
# augmentation, 36 epochs (lr steps at 27 and 33), 16 images per step; AdamW lr 1e-4, weight decay 0.05, none on
# norms, relative position tables and agent biases; fp32 (the official configs set no fp16).
_base_ = ['../../_base_/coco_instance_ms_crop_3x.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={k: dict(decay_mult=0.) for k in (
        'absolute_pos_embed', 'relative_position_bias_table', 'norm',
        'an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias')}),
)
