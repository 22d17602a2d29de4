# RAVLT + Mask R-CNN + FPN, COCO 1x: the official detection/configs/RALA/maskrcnn_*_1x.py (AdamW lr 1e-4, weight
# decay 0.05, none on parameters named *norm*, mmcv fp16 with its static loss scale 512). The per-model config sets
# model_name, drop_path_rate, init_cfg and the neck's channels.
# The backbone as the official GLTA (detection/mmdet/models/backbones/RALA.py): all four levels, each through a
# LayerNorm (its `extra_norms`; eps 1e-6 there, 1e-5 here), any input size. Its BatchNorms are SyncBatchNorm and
# keep training (its `norm_eval` puts only `nn.BatchNorm2d` in eval mode, which SyncBatchNorm is not): here
# norm_eval stays off and `sync_bn` converts every BatchNorm under DDP (downstream.train drops it without CUDA).
_base_ = ['../../_base_/zoo_mask_rcnn.py', './coco_instance_1x.py']

sync_bn = 'torch'
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
)
