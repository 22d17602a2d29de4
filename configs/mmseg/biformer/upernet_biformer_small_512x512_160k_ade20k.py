# biformer_small + UperNet, ADE20K 512x512, 160k iterations, n_win=8 with auto_pad.
# Official README: 49.8 mIoU single-scale, 50.8 multi-scale + flip.
_base_ = ['./_base_/upernet_biformer_160k.py']

model = dict(
    backbone=dict(
        model_name='biformer_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content'),
    ),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
