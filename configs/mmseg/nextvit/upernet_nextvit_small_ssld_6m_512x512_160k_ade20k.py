# Next-ViT-S (SSLD ImageNet-1k-6M pretrained) + UperNet, ADE20K 512x512, 160k: the official
# segmentation/configs/upernet_512_nextvit_small_160k.py. README: 49.8/50.8 mIoU (single-scale / multi-scale + flip).
_base_ = ['./_base_/upernet_ade20k_512x512_160k.py']

model = dict(backbone=dict(
    model_name='nextvit_small',
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_small.bd_ssld_6m_in1k')))
