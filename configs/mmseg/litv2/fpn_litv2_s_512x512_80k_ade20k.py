# LITv2-S + Semantic FPN, ADE20K 512x512, 80k iterations. Paper (official checkpoint): 44.3 mIoU.
_base_ = ['./_base_/fpn_ade20k_512x512_80k.py']

model = dict(
    backbone=dict(
        model_name='litv2_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
