# RAVLT + Cascade Mask R-CNN (4conv1fc GIoU box heads, SyncBN) + FPN, COCO 3x multi-scale crop: the official
# detection/configs/RALA/casrcnn_*_3x.py (36 epochs, lr steps at 27 and 33, AdamW lr 1e-4, weight decay 0.05, none
# on any norm layer (norm_decay_mult 0) nor on parameters named *norm*, mmcv fp16 with its static loss scale 512).
# Backbone as in mask_rcnn_ravlt_1x.py.
_base_ = ['../../_base_/zoo_cascade_mask_rcnn.py', '../../_base_/coco_instance_ms_crop_3x.py']

sync_bn = 'torch'
optim_wrapper = dict(
    loss_scale=512.,
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
