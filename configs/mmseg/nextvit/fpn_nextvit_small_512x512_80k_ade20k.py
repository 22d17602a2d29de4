# Next-ViT-S (ImageNet-1k pretrained) + Semantic FPN, ADE20K 512x512, 80k: the official
# segmentation/configs/fpn_512_nextvit_small_80k.py. README: 46.5 mIoU.
_base_ = ['./_base_/fpn_ade20k_512x512_80k.py']

model = dict(backbone=dict(
    model_name='nextvit_small',
    init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_small.bd_in1k')))
