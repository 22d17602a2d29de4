# transnext_base + Mask R-CNN, COCO 1x: the official config (detection/maskrcnn/configs/
# mask_rcnn_transnext_base_fpn_1x_coco.py; drop_path_rate 0.7 from the official backbone class). Published:
# 51.7 box AP / 45.9 mask AP (with the official interpolated position bias, see _base_).
_base_ = ['./_base_/mask_rcnn_transnext_1x.py']

model = dict(
    backbone=dict(
        model_name='transnext_base',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/DaiShiResearch/transnext-base-224-1k/resolve/main/transnext_base_224_1k.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
