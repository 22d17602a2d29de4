# tiny-MOAT-3 + DeepLabv3+, ADE20K 512x512, 160k iterations (_base_: the recipe and the backbone setting).
# drop_path_rate: deeplab2's for tiny-MOAT-3 (1 - its survival_prob). Weights: the official TF1 release (ImageNet-1K,
# 256, with the bias tables), converted by the MOAT reader (needs tensorflow).
_base_ = ['./_base_/deeplabv3plus_moat_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='tiny_moat_3',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=(
            'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/'
            'tiny_moat3_imagenet_1k_256_w_position_embedding.tar.gz')),
    ),
    decode_head=dict(in_channels=640, c1_in_channels=80),
    auxiliary_head=dict(in_channels=320))
