# Agent-Swin-S + UperNet, ADE20K 512x512, 160k iterations: the official upernet_agent_swin_s_9-12-14-7.py
# (agent grids ((9, 9), (12, 12), (7, 7), (7, 7)): stage 3 has no agent blocks, its (7, 7) is the official value).
# Official: 48.08 mIoU.
_base_ = ['./_base_/upernet_agent_swin_160k.py']

model = dict(
    backbone=dict(
        model_name='agent_swin_small',
        drop_path_rate=0.3,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (7, 7), (7, 7))),
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/f607172c9fea4d6e99bb/?dl=1'),
    ),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
