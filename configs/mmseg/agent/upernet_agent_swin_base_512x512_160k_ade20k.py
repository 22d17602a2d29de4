# Agent-Swin-B + UperNet, ADE20K 512x512, 160k iterations: the official upernet_agent_swin_b_9-12-14-7.py
# (agent grids ((9, 9), (12, 12), (14, 14), (7, 7))). Official: 48.73 mIoU.
_base_ = ['./_base_/upernet_agent_swin_160k.py']

model = dict(
    backbone=dict(
        model_name='agent_swin_base',
        drop_path_rate=0.5,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/4fcd2d0114bb490483c3/?dl=1'),
    ),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
