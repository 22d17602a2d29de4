# Next-ViT-B (SSLD ImageNet-1k-6M pretrained) + UperNet, ADE20K 512x512, 160k: the official
# segmentation/configs/upernet_512_nextvit_base_160k.py. README: 51.8/52.8 mIoU (single-scale / multi-scale + flip).
_base_ = ['./_base_/upernet_ade20k_512x512_160k.py']

model = dict(backbone=dict(
    model_name='nextvit_base',
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint='hf-hub:timm/nextvit_base.bd_ssld_6m_in1k')))
