# NAT-Tiny + Mask R-CNN, COCO 3x multi-scale crop. Paper (official checkpoint): 47.7 box AP, 42.6 mask AP.
_base_ = ['../_base_/zoo_mask_rcnn.py', '../_base_/coco_instance_ms_crop_3x.py']

model = dict(
    backbone=dict(
        model_name='nat_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_tiny.pth'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
