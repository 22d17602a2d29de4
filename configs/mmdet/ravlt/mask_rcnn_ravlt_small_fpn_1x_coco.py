# RAVLT-S + Mask R-CNN, COCO 1x. README (official checkpoint): 49.8 box AP, 44.6 mask AP.
# The official detection/configs/RALA/maskrcnn_s_1x.py; drop_path_rate is its value.
_base_ = ['./_base_/mask_rcnn_ravlt_1x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_small',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]))
