# Next-ViT + Mask R-CNN + FPN: the official detection/configs/mask_rcnn_nextvit_*.py backbone (Next-ViT repo, mmdet
# 2.23): no output norms (with_extra_norm=False), stem and stage 0 frozen (frozen_stages=1), BatchNorms in eval mode
# (norm_eval=True). The schedule configs set data, optimizer and lr steps, the per-model configs model_name,
# drop_path_rate and init_cfg (timm's copies of the official ImageNet-1k checkpoints).
_base_ = ['../../_base_/zoo_mask_rcnn.py']

model = dict(
    backbone=dict(
        out_norm=False,
        frozen_stages=1,
        norm_eval=True,
        pad_multiple=1,  # Next-ViT takes any size; the data preprocessor pads to 32 as the official pipeline
    ),
    neck=dict(in_channels=[96, 256, 512, 1024]))
