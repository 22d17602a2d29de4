# Agent-Swin + UperNet on ADE20K (downstream/segmentation/configs/agent_swin/*.py): the zoo's UperNet 512x512 160k
# recipe (AdamW lr 6e-5, weight decay 0.01, 1500-iteration warm-up, poly power 1), with no weight decay on norms,
# relative position tables and agent biases, per-stage output norms, fp32 (the official configs set no fp16).
_base_ = ['../../_base_/upernet_ade20k_512x512_160k.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={k: dict(decay_mult=0.) for k in (
        'absolute_pos_embed', 'relative_position_bias_table', 'norm',
        'an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias')}),
)
