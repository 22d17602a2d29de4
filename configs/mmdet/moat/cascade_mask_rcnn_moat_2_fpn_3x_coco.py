# MOAT-2 + Cascade Mask R-CNN, COCO 3x multi-scale crop (_base_: the recipe and the backbone setting). drop_path_rate:
# deeplab2's for MOAT-2 (1 - its survival_prob). Weights: the official TF1 release (ImageNet-22K + 1K, 384, with the
# bias tables), converted by the MOAT reader (needs tensorflow). Input normalisation: the checkpoint's 127.5 / 127.5
# (the model card's option 2).
_base_ = ['./_base_/cascade_mask_rcnn_moat_3x.py']

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        model_name='moat_2',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=(
            'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/'
            'moat2_imagenet_22k_and_1k_384_w_position_embedding.tar.gz')),
    ),
    neck=dict(in_channels=[128, 256, 512, 1024]))
