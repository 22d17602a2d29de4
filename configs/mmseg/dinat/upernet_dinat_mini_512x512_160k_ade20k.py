# DiNAT-Mini + UperNet, ADE20K 512x512, 160k iterations. Paper (official checkpoint): 45.8 mIoU, 47.2 multi-scale.
_base_ = ['../_base_/upernet_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='dinat_mini',
        drop_path_rate=0.2,
        # the papers' segmentation dilations (larger than the 224px classification ones)
        model_kwargs=dict(dilations=[[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]]),
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_mini_in1k_224.pth'),  # noqa: E501
    ),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
