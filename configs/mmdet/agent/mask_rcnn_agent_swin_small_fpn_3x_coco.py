# Agent-Swin-S + Mask R-CNN, COCO 3x: the official agent_swin_s_mrcnn_3x_9-12-14-7.py
# (agent grids 9-12-14-7 at detection resolution, per-stage output norms). Official: 48.9 box AP, 43.8 mask AP.
_base_ = ['../_base_/zoo_mask_rcnn.py', './_base_/agent_swin_coco_3x.py']

model = dict(
    backbone=dict(
        model_name='agent_swin_small',
        drop_path_rate=0.1,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/f607172c9fea4d6e99bb/?dl=1'),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
