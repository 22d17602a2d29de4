# RAVLT + UperNet on ADE20K, 512x512 crops, 160k iterations (the README's "UperNet 2x"): the official
# segmentation/configs/RALA/RALA_Uper_*_2x.py, which is the zoo's UperNet recipe (AdamW lr 6e-5, weight decay 0.01,
# none on parameters named *norm*, 1500-iteration linear warm-up, poly decay power 1) with mmcv fp16 at its static
# loss scale 512. Backbone as in fpn_ravlt_ade20k_512x512_80k.py (norms on all four levels, sync_bn).
_base_ = ['../../_base_/upernet_ade20k_512x512_160k.py']

sync_bn = 'torch'
optim_wrapper = dict(loss_scale=512., paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)}))
