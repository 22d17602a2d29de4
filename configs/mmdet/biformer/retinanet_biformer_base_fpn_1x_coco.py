# biformer_base + RetinaNet, COCO 1x, n_win=16 with auto_pad. Official README: 47.1 box AP.
_base_ = ['./_base_/retinanet_biformer_1x.py']

model = dict(
    backbone=dict(
        model_name='biformer_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
