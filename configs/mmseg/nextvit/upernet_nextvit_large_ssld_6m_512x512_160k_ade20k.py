# Next-ViT-L (SSLD ImageNet-1k-6M pretrained) + UperNet, ADE20K 512x512, 160k: the official
# segmentation/configs/upernet_512_nextvit_large_160k.py. README: 51.5/52.0 mIoU (single-scale / multi-scale + flip).
_base_ = ['./_base_/upernet_ade20k_512x512_160k.py']

model = dict(backbone=dict(
    model_name='nextvit_large',
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_large.bd_ssld_6m_in1k')))
