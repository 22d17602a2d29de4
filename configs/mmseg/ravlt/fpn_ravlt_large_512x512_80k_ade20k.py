# RAVLT-L + Semantic FPN, ADE20K 512x512, 80k iterations. README (official checkpoint): 52.6 mIoU.
# Source: the official segmentation/configs/RALA/RALA_FPN_l_1x.py; drop_path_rate is its value.
_base_ = ['./_base_/fpn_ravlt_ade20k_512x512_80k.py']

model = dict(
    backbone=dict(
        model_name='ravlt_large',
        drop_path_rate=0.55,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'),
    ),
    neck=dict(in_channels=[96, 192, 448, 640]))
