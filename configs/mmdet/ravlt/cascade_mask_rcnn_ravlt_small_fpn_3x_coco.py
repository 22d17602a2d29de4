# RAVLT-S + Cascade Mask R-CNN, COCO 3x multi-scale crop. README (official checkpoint): 54.2 box AP, 46.8 mask AP.
# The official detection/configs/RALA/casrcnn_s_3x.py; drop_path_rate is its value.
_base_ = ['./_base_/cascade_mask_rcnn_ravlt_3x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_small',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]))
