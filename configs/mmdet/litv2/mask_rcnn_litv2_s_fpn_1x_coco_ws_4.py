# LITv2-S + Mask R-CNN, COCO 1x, HiLo window 4 in stage 3 (the official *_ws_4 config;
# the ImageNet weights were trained with window 2). Paper (official checkpoint): 44.7 box AP, 40.7 mask AP.
_base_ = ['./_base_/mask_rcnn_litv2_1x.py']

model = dict(
    backbone=dict(
        model_name='litv2_small',
        drop_path_rate=0.2,
        model_kwargs=dict(window_sizes=(0, 0, 4, 1)),  # HiLo window 4 in stage 3 at detection time
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
