# Agent-PVT + Mask R-CNN + FPN, COCO 1x; the per-model config sets the variant, drop_path_rate and init_cfg.
_base_ = ['../../_base_/zoo_mask_rcnn.py', './coco_instance_1x.py']

# the official downstream agent grids (file-name suffix 12-16-28-28); the official backbone has no output norms
model = dict(
    backbone=dict(out_norm=False, model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
    neck=dict(in_channels=[64, 128, 320, 512]))
