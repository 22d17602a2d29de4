# RAVLT-S + RetinaNet, COCO 1x. README (official checkpoint): 48.3 box AP.
# The official detection/configs/RALA/retinanet_s_1x.py; drop_path_rate is its value.
_base_ = ['./_base_/retinanet_ravlt_1x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_small',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]))
