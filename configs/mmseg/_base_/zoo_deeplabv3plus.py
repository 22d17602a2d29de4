# DeepLabv3+ (depthwise-separable ASPP on the last level + a decoder fed by the first, stride-4 level; FCN auxiliary
# head on level 2) with a zoo backbone for ADE20K; the per-model config sets model_name, drop_path_rate, init_cfg,
# the heads' input channels and the ASPP rates for its output stride (mmseg's (1, 12, 24, 36) are for a dilated
# ResNet at stride 8).
_base_ = ['mmseg::_base_/models/deeplabv3plus_r50-d8.py']
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        out_norm=True,
        pad_multiple=1,
        frozen_stages=-1,
        with_cp=False,
    ),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
