# RAVLT + Mask R-CNN + FPN, COCO 3x with the DETR-style multi-scale + crop augmentation: the official
# detection/configs/RALA/maskrcnn_*_3x.py (36 epochs, lr steps at 27 and 33, AdamW lr 1e-4, weight decay 0.05,
# none on parameters named *norm*, mmcv fp16 with its static loss scale 512). Backbone as in mask_rcnn_ravlt_1x.py.
_base_ = ['../../_base_/zoo_mask_rcnn.py', '../../_base_/coco_instance_ms_crop_3x.py']

sync_bn = 'torch'
optim_wrapper = dict(loss_scale=512., paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)}))
