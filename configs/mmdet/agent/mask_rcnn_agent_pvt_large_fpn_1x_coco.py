# Agent-PVT-L + Mask R-CNN, COCO 1x: the official agent_pvt_l_mrcnn_1x_12-16-28-28.py.
# Official: 46.9 box AP, 42.8 mask AP.
_base_ = ['./_base_/agent_pvt_mask_rcnn_1x.py']

model = dict(
    backbone=dict(
        model_name='agent_pvt_large',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://cloud.tsinghua.edu.cn/f/040cfe0cfbbe4762ad09/?dl=1'),
    ))
