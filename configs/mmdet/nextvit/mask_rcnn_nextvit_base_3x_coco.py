# Next-ViT-B + Mask R-CNN, COCO 3x: the official detection/configs/mask_rcnn_nextvit_base_3x.py.
# README: 49.5 box AP / 44.4 mask AP; drop_path_rate: the official detection backbone's.
_base_ = ['./_base_/mask_rcnn_nextvit_3x.py']

model = dict(
    backbone=dict(
        model_name='nextvit_base',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_base.bd_in1k'),
    ))
