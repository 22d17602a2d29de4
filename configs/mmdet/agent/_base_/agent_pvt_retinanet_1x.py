# Agent-PVT + RetinaNet + FPN, COCO 1x (lr 1e-4); the per-model config sets the variant, drop_path_rate, init_cfg.
_base_ = ['../../_base_/zoo_retinanet.py', './coco_detection_1x.py']

# the official downstream agent grids (file-name suffix 12-16-28-28); the official backbone has no output norms
model = dict(
    backbone=dict(out_norm=False, model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
    neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(optimizer=dict(lr=0.0001))
