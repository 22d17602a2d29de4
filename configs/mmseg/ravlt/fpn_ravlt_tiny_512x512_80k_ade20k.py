# RAVLT-T + Semantic FPN, ADE20K 512x512, 80k iterations. README (official checkpoint): 47.9 mIoU.
# Source: the official segmentation/configs/_base_/models/RALA_fpn.PY (RAVLT-T's settings, drop_path_rate 0.1)
# under the RALA_FPN_*_1x.py recipe; the repo has no RALA_FPN_t config.
_base_ = ['./_base_/fpn_ravlt_ade20k_512x512_80k.py']

model = dict(
    backbone=dict(
        model_name='ravlt_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]))
