# NAT-Base + UperNet, ADE20K 512x512, 160k iterations. Paper (official checkpoint): 48.5 mIoU, 49.7 multi-scale.
_base_ = ['../_base_/upernet_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='nat_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_base.pth'),
    ),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
