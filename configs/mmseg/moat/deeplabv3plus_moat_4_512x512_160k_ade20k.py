# MOAT-4 + DeepLabv3+, ADE20K 512x512, 160k iterations (_base_: the recipe and the backbone setting). The paper's
# abstract (its own TF recipe; 496M parameters, i.e. MOAT-4): 57.6 mIoU, single scale. drop_path_rate: deeplab2's for
# MOAT-4 (1 - its survival_prob). Weights: the official TF1 release (ImageNet-22K + 1K, 512, with the bias tables),
# converted by the MOAT reader (needs tensorflow). Input normalisation: the checkpoint's 127.5 / 127.5 (the model
# card's option 2).
_base_ = ['./_base_/deeplabv3plus_moat_ade20k_512x512_160k.py']

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        model_name='moat_4',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint=(
            'https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/'
            'moat4_imagenet_22k_and_1k_512_w_position_embedding.tar.gz')),
    ),
    decode_head=dict(in_channels=2048, c1_in_channels=256),
    auxiliary_head=dict(in_channels=1024))
