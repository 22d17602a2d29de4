# Semantic FPN (FPN neck + FPNHead) with a zoo backbone for ADE20K; the per-model config sets model_name,
# drop_path_rate, init_cfg and the neck's input channels.
_base_ = ['mmseg::_base_/models/fpn_r50.py']
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
    decode_head=dict(num_classes=150))
