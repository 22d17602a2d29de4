# MOAT-2 + DeepLabv3+, ADE20K 512x512, 160k iterations (_base_: the recipe and the backbone setting). drop_path_rate:
# deeplab2's for MOAT-2 (1 - its survival_prob). Weights: the official TF1 release (ImageNet-22K + 1K, 384, with the
# bias tables), converted by the MOAT reader (needs tensorflow). Input normalisation: the checkpoint's 127.5 / 127.5
# (the model card's option 2).
_base_ = ['./_base_/deeplabv3plus_moat_ade20k_512x512_160k.py']

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        model_name='moat_2',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=(
            'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/'
            'moat2_imagenet_22k_and_1k_384_w_position_embedding.tar.gz')),
    ),
    decode_head=dict(in_channels=1024, c1_in_channels=128),
    auxiliary_head=dict(in_channels=512))
