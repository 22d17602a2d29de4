# Agent-PVT-L + Semantic FPN, ADE20K 512x512, 40k iterations: the official fpn_agent_pvt_l_12-16-28-28.py.
# Official: 46.52 mIoU.
_base_ = ['./_base_/fpn_agent_pvt_40k.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_large',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/040cfe0cfbbe4762ad09/?dl=1'),
    ))
