# Agent-PVT-M + Mask R-CNN, COCO 1x: the official agent_pvt_m_mrcnn_1x_12-16-28-28.py.
# Official: 45.9 box AP, 42.0 mask AP.
_base_ = ['./_base_/agent_pvt_mask_rcnn_1x.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_medium',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/4d00ecacf18b45f9b88c/?dl=1'),
    ))
