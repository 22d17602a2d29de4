# Agent-Swin-T + UperNet, ADE20K 512x512, 160k iterations: the official upernet_agent_swin_t_9-12-14-7.py
# (agent grids ((9, 9), (12, 12), (14, 14), (7, 7))). Official: 46.68 mIoU.
_base_ = ['./_base_/upernet_agent_swin_160k.py']

model = dict(
    backbone=dict(
        model_name='agent_swin_tiny',
        drop_path_rate=0.3,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/a2ddc1190c224f768a41/?dl=1'),
    ),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
