# biformer_base + Semantic FPN, ADE20K 512x512, 80k iterations, n_win=8 with auto_pad. Official README: 49.9 mIoU.
_base_ = ['./_base_/fpn_ade20k_512x512_80k.py']

model = dict(
    backbone=dict(
        model_name='biformer_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
