# BiFormer + RetinaNet + FPN (P3-P7 from C3-C5, extra convs on the input), COCO 1x: the official
# object_detection/configs/coco/retinanet.1x.biformer_*.py (WaveViT's settings: AdamW lr 1e-4, weight decay 1e-4 on
# every parameter, fp16 with a static loss scale of 512). Backbone as the official BiFormer_mm: n_win=16 regions per
# side with auto_pad (the maps are padded to multiples of 16 before each BRA; ours always pads), BatchNorm statistics
# frozen (norm_eval=True, affine still trained), a LayerNorm on every level (official `extra_norms`, timm LayerNorm2d
# eps 1e-6; ours `norm{i}` with eps 1e-5). The per-model config sets model_name, drop_path_rate, init_cfg and the
# neck's channels.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', './coco_detection_1x.py']
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        model_kwargs=dict(n_win=16),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        out_norm=True,
        norm_eval=True,
        pad_multiple=1,  # BiFormer takes any size (auto_pad); no padding beyond the data preprocessor's, as officially
        frozen_stages=-1,
        with_cp=False,
    ),
    neck=dict(start_level=1, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
)
find_unused_parameters = True  # as the official config (distributed training only)
