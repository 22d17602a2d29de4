# Agent-PVT-T + Semantic FPN, ADE20K 512x512, 40k iterations: the official fpn_agent_pvt_t_12-16-28-28.py.
# Official: 40.18 mIoU.
_base_ = ['./_base_/fpn_agent_pvt_40k.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/13fdf0e0a7c5498c934f/?dl=1'),
    ))
