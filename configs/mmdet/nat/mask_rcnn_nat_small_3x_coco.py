# NAT-Small + Mask R-CNN, COCO 3x multi-scale crop. Paper (official checkpoint): 48.4 box AP, 43.2 mask AP.
_base_ = ['../_base_/zoo_mask_rcnn.py', '../_base_/coco_instance_ms_crop_3x.py']

model = dict(
    backbone=dict(
        model_name='nat_small',
        drop_path_rate=0.35,
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_small.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
