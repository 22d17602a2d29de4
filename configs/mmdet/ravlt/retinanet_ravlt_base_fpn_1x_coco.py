# RAVLT-B + RetinaNet, COCO 1x. README (official checkpoint): 49.8 box AP.
# The official detection/configs/RALA/retinanet_m_1x.py; drop_path_rate is its value.
_base_ = ['./_base_/retinanet_ravlt_1x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 512]))
