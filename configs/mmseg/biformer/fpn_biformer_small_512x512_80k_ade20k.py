# biformer_small + Semantic FPN, ADE20K 512x512, 80k iterations, n_win=8 with auto_pad. Official README: 48.9 mIoU.
_base_ = ['./_base_/fpn_ade20k_512x512_80k.py']

model = dict(
    backbone=dict(
        model_name='biformer_small',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
