# MOAT-0 + Cascade Mask R-CNN, COCO 3x multi-scale crop (_base_: the recipe and the backbone setting). drop_path_rate:
# deeplab2's for MOAT-0 (1 - its survival_prob). Weights: the official TF1 release (ImageNet-1K, 224, with the bias
# tables), converted by the MOAT reader (needs tensorflow).
_base_ = ['./_base_/cascade_mask_rcnn_moat_3x.py']

model = dict(
    backbone=dict(
        model_name='moat_0',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=(
            'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/'
            'moat0_imagenet_1k_224_w_position_embedding.tar.gz')),
    ),
    neck=dict(in_channels=[96, 192, 384, 768]))
