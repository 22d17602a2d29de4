# RetinaNet + FPN (P3-P7, extra convs on the backbone's last input) with a zoo backbone; the per-model config sets
# model_name, drop_path_rate, init_cfg and the neck's channels.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py']
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)

model = dict(
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
    ))
