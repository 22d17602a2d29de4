# Next-ViT + Semantic FPN on ADE20K, 512x512 crops: the official segmentation/configs/fpn_512_nextvit_*_80k.py. Its
# "80k" is 80k iterations at 16 images per step run as 40k at 32 (8 GPUs x 4, its max_iters=80000//2); AdamW lr 1e-4,
# weight decay 1e-4 on every parameter, poly decay power 0.9 to 1e-6, no warm-up, fp32.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['downstream'], allow_failed_imports=False)

# The one place to point at ADEChallengeData2016 (images/, annotations/); `--cfg-options data_root=...` with
# downstream.train/test rewrites every dataset path below as well.
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
# The official Next-ViT segmentation backbone (segmentation/nextvit.py with with_extra_norm=True, norm_cfg=SyncBN):
# every BatchNorm synchronised, a fresh BatchNorm on levels 0-2 (extra_norm_list) and the classification model's own
# final norm, with its pretrained weights, on level 3 (the code the README's numbers come from; a later commit removed
# that norm, which leaves with_extra_norm=True failing). No frozen stages, BatchNorms in training mode.
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        out_norm=('bn', 'bn', 'bn', False),
        final_norm=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        frozen_stages=-1,
        norm_eval=False,
        pad_multiple=1,  # Next-ViT takes any size
        with_cp=False,
    ),
    neck=dict(in_channels=[96, 256, 512, 1024]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
)
max_iters = 40000
train_cfg = dict(max_iters=max_iters, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=max_iters, by_epoch=False)]
