# LITv2-S + RetinaNet, COCO 1x, HiLo window 2. Paper (official checkpoint): 44.0 box AP.
_base_ = ['./_base_/retinanet_litv2_1x.py']

model = dict(
    backbone=dict(
        model_name='litv2_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
