# Next-ViT-B (ImageNet-1k pretrained) + Semantic FPN, ADE20K 512x512, 80k: the official
# segmentation/configs/fpn_512_nextvit_base_80k.py. README: 48.6 mIoU.
_base_ = ['./_base_/fpn_ade20k_512x512_80k.py']

model = dict(backbone=dict(
    model_name='nextvit_base',
    init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_base.bd_in1k')))
