# Next-ViT + UperNet on ADE20K, 512x512 crops, 160k iterations at 16 images per step (8 GPUs x 2): the official
# segmentation/configs/upernet_512_nextvit_*_160k.py: AdamW lr 6e-5, weight decay 0.01, none on norms (also mmcv's
# 'bn'-named head norms), 1500-iteration linear warm-up from 1e-6 then linear decay to 0, fp32.
_base_ = ['../../_base_/upernet_ade20k_512x512_160k.py']

# The official Next-ViT segmentation backbone (segmentation/nextvit.py with with_extra_norm=True, norm_cfg=SyncBN):
# every BatchNorm synchronised, a fresh BatchNorm on levels 0-2 (extra_norm_list) and the classification model's own
# final norm, with its pretrained weights, on level 3 (the code the README's numbers come from; a later commit removed
# that norm, which leaves with_extra_norm=True failing). No frozen stages, BatchNorms in training mode.
model = dict(
    backbone=dict(
        out_norm=('bn', 'bn', 'bn', False),
        final_norm=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        frozen_stages=-1,
        norm_eval=False,
        pad_multiple=1,  # Next-ViT takes any size
    ),
    decode_head=dict(in_channels=[96, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'bn': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
)
