# NAT-Mini + UperNet, ADE20K 512x512, 160k iterations. Paper (official checkpoint): 45.1 mIoU, 46.4 multi-scale.
_base_ = ['../_base_/upernet_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='nat_mini',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_mini.pth'),
    ),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
