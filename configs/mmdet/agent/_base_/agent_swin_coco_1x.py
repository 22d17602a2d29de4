# Agent-Swin's COCO "1x": as its 3x (same multi-scale + crop augmentation: the official 1x configs carry that
# pipeline too, and the same optimizer) over 12 epochs, lr steps at 8 and 11.
_base_ = ['./agent_swin_coco_3x.py']

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
