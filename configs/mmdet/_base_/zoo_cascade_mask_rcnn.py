# Cascade Mask R-CNN + FPN with a zoo backbone and the 4conv1fc GIoU box heads (SyncBN) of the NAT/DiNAT,
# Swin and ConvNeXt 3x recipes; the per-model config sets model_name, drop_path_rate, init_cfg, neck channels.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py']
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)


def _box_head(target_stds):
    return dict(
        type='ConvFCBBoxHead',
        num_shared_convs=4,
        num_shared_fcs=1,
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=target_stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        out_norm=True,
        pad_multiple=1,  # NAT/DiNAT(_s) take any size; no padding beyond the data preprocessor's, as officially
        frozen_stages=-1,
        with_cp=False,
    ),
    roi_head=dict(bbox_head=[
        _box_head([0.1, 0.1, 0.2, 0.2]),
        _box_head([0.05, 0.05, 0.1, 0.1]),
        _box_head([0.033, 0.033, 0.067, 0.067]),
    ]))
