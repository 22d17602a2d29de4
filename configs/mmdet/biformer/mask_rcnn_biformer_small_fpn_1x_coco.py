# biformer_small + Mask R-CNN, COCO 1x, n_win=16 with auto_pad. Official README: 47.8 box AP / 43.2 mask AP
# (paper); 48.1 / 43.6 re-run at the code release.
_base_ = ['./_base_/mask_rcnn_biformer_1x.py']

model = dict(
    backbone=dict(
        model_name='biformer_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
