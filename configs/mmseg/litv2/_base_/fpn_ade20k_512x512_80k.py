# LITv2 + Semantic FPN on ADE20K, 512x512 crops, 80k iterations: the official
# segmentation/configs/litv2/litv2_*_fpn_r50_512x512_80k_ade20k.py (AdamW lr 1e-4, weight decay 1e-4 on every
# parameter, poly decay power 0.9 to 1e-6, no warm-up, fp32), 16 images per step (8 GPUs x 2).
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
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='AttnZooBackbone',
        model_name=None,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        # the official mmseg backbone (segmentation/mmseg/models/backbones/litv2.py) normalises all four levels;
        # only the detection one skips level 0
        out_norm=True,
        pad_multiple=1,  # LITv2 takes any size; no padding beyond the data preprocessor's, as officially
        frozen_stages=-1,
        with_cp=False,
    ),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
)
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
