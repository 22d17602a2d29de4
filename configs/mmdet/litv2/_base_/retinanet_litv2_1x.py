# LITv2 + RetinaNet + FPN (P3-P7 from C3-C5, extra convs on the input), COCO 1x: the official
# detection/configs/litv2/retinanet_litv2_*_fpn_1x_coco.py (AdamW lr 1e-4, weight decay 1e-4, fp16). Its
# paramwise_cfg lacks `custom_keys`, so mmcv ignored it and norms kept their weight decay; so here.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', './coco_detection_1x.py']
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        out_norm=(False, True, True, True),  # the official backbone: no norm on level 0
        pad_multiple=1,  # LITv2 takes any size; no padding beyond the data preprocessor's, as officially
        frozen_stages=-1,
        with_cp=False,
    ),
    neck=dict(start_level=1, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
)
