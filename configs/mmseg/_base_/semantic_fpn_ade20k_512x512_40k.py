# Semantic FPN on ADE20K, 512x512 crops, 40k iterations, 16 images per step (8 GPUs x 2): the PVT recipe that
# Agent-PVT's configs use (downstream/segmentation/configs/agent_pvt/*.py): AdamW lr 2e-4, weight decay 1e-4 without
# parameter-wise settings, poly decay (power 0.9) to 0, no warm-up, fp32 (the official configs set no fp16).
_base_ = [
    './zoo_semantic_fpn.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]

# The one place to point at ADEChallengeData2016 (images/, annotations/); `--cfg-options data_root=...` with
# downstream.train/test rewrites every dataset path below as well.
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001),
)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
