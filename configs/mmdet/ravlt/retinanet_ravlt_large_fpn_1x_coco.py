# RAVLT-L + RetinaNet, COCO 1x. README (official checkpoint): 50.9 box AP.
# The official detection/configs/RALA/retinanet_l_1x.py; drop_path_rate is its value.
_base_ = ['./_base_/retinanet_ravlt_1x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_large',
        drop_path_rate=0.55,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'),
    ),
    neck=dict(in_channels=[96, 192, 448, 640]))
