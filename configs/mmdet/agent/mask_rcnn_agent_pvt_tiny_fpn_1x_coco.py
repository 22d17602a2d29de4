# Agent-PVT-T + Mask R-CNN, COCO 1x: the official agent_pvt_t_mrcnn_1x_12-16-28-28.py.
# Official: 41.4 box AP, 38.7 mask AP.
_base_ = ['./_base_/agent_pvt_mask_rcnn_1x.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/13fdf0e0a7c5498c934f/?dl=1'),
    ))
