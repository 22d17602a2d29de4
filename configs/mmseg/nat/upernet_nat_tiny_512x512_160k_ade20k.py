# NAT-Tiny + UperNet, ADE20K 512x512, 160k iterations. Paper (official checkpoint): 47.1 mIoU, 48.4 multi-scale.
_base_ = ['../_base_/upernet_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='nat_tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_tiny.pth'),
    ),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
