# Agent-PVT-S + Semantic FPN, ADE20K 512x512, 40k iterations: the official fpn_agent_pvt_s_12-16-28-28.py.
# Official: 44.18 mIoU.
_base_ = ['./_base_/fpn_agent_pvt_40k.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/36b8be9a8863456685a3/?dl=1'),
    ))
