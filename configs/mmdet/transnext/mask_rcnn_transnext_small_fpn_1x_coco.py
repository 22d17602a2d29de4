# transnext_small + Mask R-CNN, COCO 1x: the official config (detection/maskrcnn/configs/
# mask_rcnn_transnext_small_fpn_1x_coco.py; drop_path_rate 0.6 from the official backbone class). Published:
# 51.1 box AP / 45.5 mask AP (with the official interpolated position bias, see _base_).
_base_ = ['./_base_/mask_rcnn_transnext_1x.py']

model = dict(
    backbone=dict(
        model_name='transnext_small',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/DaiShiResearch/transnext-small-224-1k/resolve/main/transnext_small_224_1k.pth'),
    ),
    neck=dict(in_channels=[72, 144, 288, 576]))
