# Agent-PVT-M + Semantic FPN, ADE20K 512x512, 40k iterations: the official fpn_agent_pvt_m_12-16-28-28.py.
# Official: 44.30 mIoU.
_base_ = ['./_base_/fpn_agent_pvt_40k.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_medium',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/4d00ecacf18b45f9b88c/?dl=1'),
    ))
