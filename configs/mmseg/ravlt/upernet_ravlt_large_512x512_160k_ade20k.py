# RAVLT-L + UperNet, ADE20K 512x512, 160k iterations. README (official checkpoint, "UperNet 2x"): 53.2 mIoU.
# The official segmentation/configs/RALA/RALA_Uper_l_2x.py; drop_path_rate is its value.
_base_ = ['./_base_/upernet_ravlt_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='ravlt_large',
        drop_path_rate=0.55,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'),
    ),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))
