# biformer_base + UperNet, ADE20K 512x512, 160k iterations, n_win=8 with auto_pad.
# Official README: 51.0 mIoU single-scale, 51.7 multi-scale + flip.
_base_ = ['./_base_/upernet_biformer_160k.py']

model = dict(
    backbone=dict(
        model_name='biformer_base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content'),
    ),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
