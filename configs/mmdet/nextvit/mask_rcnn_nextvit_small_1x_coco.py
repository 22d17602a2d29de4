# Next-ViT-S + Mask R-CNN, COCO 1x: the official detection/configs/mask_rcnn_nextvit_small_1x.py.
# README: 45.9 box AP / 41.8 mask AP; drop_path_rate: the official detection backbone's.
_base_ = ['./_base_/mask_rcnn_nextvit_1x.py']

model = dict(
    backbone=dict(
        model_name='nextvit_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_small.bd_in1k'),
    ))
