# NAT-Base + Cascade Mask R-CNN, COCO 3x multi-scale crop. Paper (official checkpoint): 52.3 box AP, 45.1 mask AP.
_base_ = ['../_base_/zoo_cascade_mask_rcnn.py', '../_base_/coco_instance_ms_crop_3x.py']

model = dict(
    backbone=dict(
        model_name='nat_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_base.pth'),
    ),
    neck=dict(in_channels=[128, 256, 512, 1024]))
