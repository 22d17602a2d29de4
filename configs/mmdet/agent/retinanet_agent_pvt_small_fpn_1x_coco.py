# Agent-PVT-S + RetinaNet, COCO 1x: the official agent_pvt_s_rtn_1x_12-16-28-28.py. Official: 44.1 box AP.
_base_ = ['./_base_/agent_pvt_retinanet_1x.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/36b8be9a8863456685a3/?dl=1'),
    ))
