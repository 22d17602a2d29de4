# RAVLT-B + UperNet, ADE20K 512x512, 160k iterations. README (official checkpoint, "UperNet 2x"): 52.5 mIoU.
# The official segmentation/configs/RALA/RALA_Uper_b_2x.py; drop_path_rate is its value.
_base_ = ['./_base_/upernet_ravlt_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='ravlt_base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth'),
    ),
    decode_head=dict(in_channels=[96, 192, 384, 512]),
    auxiliary_head=dict(in_channels=384))
