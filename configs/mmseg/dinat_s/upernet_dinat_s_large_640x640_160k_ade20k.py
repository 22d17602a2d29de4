# DiNAT_s-Large + UperNet, ADE20K 640x640, 160k iterations. Paper (official checkpoint): 53.4 mIoU, 54.6 multi-scale.
# The paper trains the ImageNet-22K large model on 640x640 crops (the official config file inherits 512x512).
_base_ = ['../_base_/upernet_ade20k_640x640_160k.py']

model = dict(
    backbone=dict(
        model_name='dinat_s_large',
        drop_path_rate=0.3,
        # the papers' segmentation dilations (larger than the 224px classification ones)
        model_kwargs=dict(dilations=[[1, 20], [1, 10], [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5], [1, 2]]),
        init_cfg=dict(type='Pretrained', checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_s_large_in22k_224.pth'),  # noqa: E501
    ),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
