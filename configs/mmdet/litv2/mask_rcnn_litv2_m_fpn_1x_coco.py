# LITv2-M + Mask R-CNN, COCO 1x, HiLo window 2. Paper (official checkpoint): 46.8 box AP, 42.3 mask AP.
_base_ = ['./_base_/mask_rcnn_litv2_1x.py']

model = dict(
    backbone=dict(
        model_name='litv2_medium',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_m.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
