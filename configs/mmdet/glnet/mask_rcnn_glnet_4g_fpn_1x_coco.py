# glnet_4g + Mask R-CNN, COCO 1x. Ours (no official config, no paper numbers here);
# drop_path_rate: ours.
_base_ = ['./_base_/mask_rcnn_glnet_1x.py']

model = dict(
    backbone=dict(
        model_name='glnet_4g',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/u!aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5RzlEalNfQU1xbkpRaVgxP2U9dE9raEhQ/root/content'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
