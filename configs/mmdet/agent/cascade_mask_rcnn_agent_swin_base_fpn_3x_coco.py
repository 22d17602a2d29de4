# Agent-Swin-B + Cascade Mask R-CNN, COCO 3x: the official agent_swin_b_crcnn_3x_9-12-14-7.py
# (agent grids 9-12-14-7 at detection resolution, per-stage output norms). Official: 52.6 box AP, 45.3 mask AP.
_base_ = ['../_base_/zoo_cascade_mask_rcnn.py', './_base_/agent_swin_coco_3x.py']

model = dict(
    backbone=dict(
        model_name='agent_swin_base',
        drop_path_rate=0.4,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/4fcd2d0114bb490483c3/?dl=1'),
    ),
    neck=dict(in_channels=[128, 256, 512, 1024]))
