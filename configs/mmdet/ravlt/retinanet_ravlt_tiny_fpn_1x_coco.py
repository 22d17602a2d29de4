# RAVLT-T + RetinaNet, COCO 1x. README (official checkpoint): 45.9 box AP.
# The official detection/configs/RALA/retinanet_t_1x.py; drop_path_rate is its value.
_base_ = ['./_base_/retinanet_ravlt_1x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
