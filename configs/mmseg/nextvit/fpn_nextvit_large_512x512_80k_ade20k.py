# Next-ViT-L (ImageNet-1k pretrained) + Semantic FPN, ADE20K 512x512, 80k: the official
# segmentation/configs/fpn_512_nextvit_large_80k.py. README: 49.1 mIoU.
_base_ = ['./_base_/fpn_ade20k_512x512_80k.py']

model = dict(backbone=dict(
    model_name='nextvit_large',
    init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_large.bd_in1k')))
