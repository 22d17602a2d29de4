# ADE20K, 512x512 crops, 160k iterations, AdamW + linear warm-up + poly decay, 16 images per step (8 GPUs x 2),
# mixed precision: the NAT/DiNAT papers' segmentation recipe, for any decode head (the including config adds it).
_base_ = [
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

# The one place to point at ADEChallengeData2016 (images/, annotations/); `--cfg-options data_root=...` with
# downstream.train/test rewrites every dataset path below as well.
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)  # the including config sets model.data_preprocessor.size (one base holds `model`)

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

# Multi-scale + flip testing (`python -m downstream.test --tta`) as the papers' mmseg 0.x protocol: the test scale
# (2048, 512) times each ratio, aspect kept, with and without a horizontal flip (mmseg 1.x's own tta_pipeline scales the
# original image instead, which differs for images not already at the test scale).
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True) for r in img_ratios],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')],
    ]),
]

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
