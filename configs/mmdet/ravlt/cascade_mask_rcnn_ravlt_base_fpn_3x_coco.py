# RAVLT-B + Cascade Mask R-CNN, COCO 3x multi-scale crop. README (official checkpoint): 55.3 box AP, 47.7 mask AP.
# The official detection/configs/RALA/casrcnn_m_3x.py; drop_path_rate is its value.
_base_ = ['./_base_/cascade_mask_rcnn_ravlt_3x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth'),
    ),
    neck=dict(in_channels=[96, 192, 384, 512]))
