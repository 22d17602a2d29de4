# Next-ViT-B + Mask R-CNN, COCO 1x: the official detection/configs/mask_rcnn_nextvit_base_1x.py.
# README: 47.2 box AP / 42.8 mask AP; drop_path_rate: the official detection backbone's.
_base_ = ['./_base_/mask_rcnn_nextvit_1x.py']

model = dict(
    backbone=dict(
        model_name='nextvit_base',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_base.bd_in1k'),
    ))
