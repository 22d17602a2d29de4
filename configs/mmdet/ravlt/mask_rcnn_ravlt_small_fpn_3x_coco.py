# RAVLT-S + Mask R-CNN, COCO 3x multi-scale crop. README (official checkpoint): 51.4 box AP, 45.5 mask AP.
# The official detection/configs/RALA/maskrcnn_s_3x.py; drop_path_rate is its value.
_base_ = ['./_base_/mask_rcnn_ravlt_3x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_small',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]))
