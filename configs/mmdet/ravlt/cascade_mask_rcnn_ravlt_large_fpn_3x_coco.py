# RAVLT-L + Cascade Mask R-CNN, COCO 3x multi-scale crop. README (official checkpoint): 55.6 box AP, 48.0 mask AP.
# The official detection/configs/RALA/casrcnn_l_3x.py; drop_path_rate is its value.
_base_ = ['./_base_/cascade_mask_rcnn_ravlt_3x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_large',
        drop_path_rate=0.55,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'),
    ),
    neck=dict(in_channels=[96, 192, 448, 640]))
