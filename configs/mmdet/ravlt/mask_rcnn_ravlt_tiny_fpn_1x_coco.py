# RAVLT-T + Mask R-CNN, COCO 1x. README (official checkpoint): 47.3 box AP, 42.7 mask AP.
# The official detection/configs/RALA/maskrcnn_t_1x.py; drop_path_rate is its value.
_base_ = ['./_base_/mask_rcnn_ravlt_1x.py']

model = dict(
    backbone=dict(
        model_name='ravlt_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
