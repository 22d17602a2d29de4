# RAVLT + RetinaNet + FPN (P3-P7 from C3-C5, extra convs on the input), COCO 1x: the official
# detection/configs/RALA/retinanet_*_1x.py (AdamW lr 1e-4, weight decay 1e-4 on every parameter, mmcv fp16 with
# loss scale 512, find_unused_parameters: level 0 and its norm feed nothing). Backbone as in mask_rcnn_ravlt_1x.py.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', './coco_detection_1x.py']
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        out_norm=True,
        pad_multiple=1,  # RAVLT takes any size; no padding beyond the data preprocessor's, as officially
        frozen_stages=-1,
        with_cp=False,
    ),
    neck=dict(start_level=1, add_extra_convs='on_input', num_outs=5))

sync_bn = 'torch'
find_unused_parameters = True
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
)
