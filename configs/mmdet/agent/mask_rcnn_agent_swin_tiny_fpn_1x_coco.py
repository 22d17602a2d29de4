# Agent-Swin-T + Mask R-CNN, COCO 1x: the official agent_swin_t_mrcnn_1x_9-12-14-7.py
# (agent grids 9-12-14-7 at detection resolution, per-stage output norms). Official: 44.6 box AP, 40.7 mask AP.
_base_ = ['../_base_/zoo_mask_rcnn.py', './_base_/agent_swin_coco_1x.py']

model = dict(
    backbone=dict(
        model_name='agent_swin_tiny',
        drop_path_rate=0.1,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/a2ddc1190c224f768a41/?dl=1'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
