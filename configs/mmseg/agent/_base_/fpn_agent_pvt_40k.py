# Agent-PVT + Semantic FPN on ADE20K 40k, with the official downstream agent grids (file-name suffix 12-16-28-28);
# the official backbone has no output norms.
_base_ = ['../../_base_/semantic_fpn_ade20k_512x512_40k.py']

model = dict(
    backbone=dict(out_norm=False, model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
    neck=dict(in_channels=[64, 128, 320, 512]))
