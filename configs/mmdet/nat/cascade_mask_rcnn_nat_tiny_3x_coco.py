# NAT-Tiny + Cascade Mask R-CNN, COCO 3x multi-scale crop. Paper (official checkpoint): 51.4 box AP, 44.5 mask AP.
_base_ = ['../_base_/zoo_cascade_mask_rcnn.py', '../_base_/coco_instance_ms_crop_3x.py']

model = dict(
    backbone=dict(
        model_name='nat_tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_tiny.pth'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
