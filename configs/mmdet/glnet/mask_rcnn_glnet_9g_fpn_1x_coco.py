# glnet_9g + Mask R-CNN, COCO 1x. Ours (no official config, no paper numbers here);
# drop_path_rate: ours.
_base_ = ['./_base_/mask_rcnn_glnet_1x.py']

model = dict(
    backbone=dict(
        model_name='glnet_9g',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://api.onedrive.com/v1.0/shares/u!aHR0cHM6Ly8xZHJ2Lm1zL3UvcyFBa0JiY3pkUmxadkN5RUdGUTZrZldWLXdWWmVpP2U9d1d3Ujh6/root/content'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
