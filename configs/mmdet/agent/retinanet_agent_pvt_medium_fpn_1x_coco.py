# Agent-PVT-M + RetinaNet, COCO 1x: the official agent_pvt_m_rtn_1x_12-16-28-28.py. Official: 45.8 box AP.
_base_ = ['./_base_/agent_pvt_retinanet_1x.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_medium',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/4d00ecacf18b45f9b88c/?dl=1'),
    ))
