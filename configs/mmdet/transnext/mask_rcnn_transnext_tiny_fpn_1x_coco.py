# transnext_tiny + Mask R-CNN, COCO 1x: the official config (detection/maskrcnn/configs/
# mask_rcnn_transnext_tiny_fpn_1x_coco.py; drop_path_rate 0.4 from the official backbone class). Published:
# 49.9 box AP / 44.6 mask AP (with the official interpolated position bias, see _base_).
_base_ = ['./_base_/mask_rcnn_transnext_1x.py']

model = dict(
    backbone=dict(
        model_name='transnext_tiny',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k/resolve/main/transnext_tiny_224_1k.pth'),
    ),
    neck=dict(in_channels=[72, 144, 288, 576]))
