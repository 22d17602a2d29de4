# UperNet with a zoo backbone on ADE20K, 640x640 crops, 160k iterations, AdamW + linear warm-up + poly decay,
# 16 images per step (8 GPUs x 2), mixed precision: the NAT/DiNAT papers' segmentation recipe.
_base_ = [
    './zoo_upernet.py',
    'mmseg::_base_/datasets/ade20k_640x640.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

# The one place to point at ADEChallengeData2016 (images/, annotations/); `--cfg-options data_root=...` with
# downstream.train/test rewrites every dataset path below as well.
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (640, 640)
model = dict(data_preprocessor=dict(size=crop_size))

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

# No weight decay on norms and relative position biases, as the papers' configs (the constructor also exempts what
# the backbone lists in no_weight_decay()).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
