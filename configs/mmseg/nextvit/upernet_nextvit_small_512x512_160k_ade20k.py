# Next-ViT-S (ImageNet-1k pretrained) + UperNet, ADE20K 512x512, 160k: the official
# segmentation/configs/upernet_512_nextvit_small_160k.py. README: 48.1/49.0 mIoU (single-scale / multi-scale + flip).
_base_ = ['./_base_/upernet_ade20k_512x512_160k.py']

model = dict(backbone=dict(
    model_name='nextvit_small',
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_small.bd_in1k')))
