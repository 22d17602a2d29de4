# DiNAT-Tiny + Cascade Mask R-CNN, COCO 3x multi-scale crop. Paper (official checkpoint): 52.2 box AP, 45.1 mask AP.
_base_ = ['../_base_/zoo_cascade_mask_rcnn.py', '../_base_/coco_instance_ms_crop_3x.py']

model = dict(
    backbone=dict(
        model_name='dinat_tiny',
        drop_path_rate=0.3,
        # the papers' detection dilations (larger than the 224px classification ones)
        model_kwargs=dict(dilations=[[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]]),  # noqa: E501
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth'),  # noqa: E501
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
