# MOAT-3 + Cascade Mask R-CNN, COCO 3x multi-scale crop (_base_: the recipe and the backbone setting). The paper's
# abstract (its own TF recipe; 227M parameters, i.e. MOAT-3): 59.2 box AP, single scale, hard NMS. drop_path_rate:
# deeplab2's for MOAT-3 (1 - its survival_prob). Weights: the official TF1 release (ImageNet-22K + 1K, 512, with the
# bias tables), converted by the MOAT reader (needs tensorflow). Input normalisation: the checkpoint's 127.5 / 127.5
# (the model card's option 2).
_base_ = ['./_base_/cascade_mask_rcnn_moat_3x.py']

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        model_name='moat_3',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=(
            'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/'
            'moat3_imagenet_22k_and_1k_512_w_position_embedding.tar.gz')),
    ),
    neck=dict(in_channels=[160, 320, 640, 1280]))
