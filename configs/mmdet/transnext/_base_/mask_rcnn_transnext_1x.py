# TransNeXt + Mask R-CNN + FPN, COCO 1x, as the official configs (DaiShiResearch/TransNeXt,
# detection/maskrcnn/configs/mask_rcnn_transnext_*_fpn_1x_coco.py, mmdet 2.x): AdamW lr 1e-4, betas (0.9, 0.999),
# weight decay 0.05, none on query embeddings, local position biases, CPB MLPs, temperatures and norms; mmdet's 1x
# step schedule; 2 images per GPU x 8; fp32 (the official configs set no fp16).
# Position bias: the official detection backbone computes the CPB bias at img_size=800 and bilinearly interpolates it
# to each input's map ("due to slow coordinate generation", TransNeXt issue #11); ours computes the exact bias of
# every input size (cached per size), so the published numbers were measured with that interpolated bias.
# Stage outputs carry the stages' own LayerNorms (the official norm1..norm4), hence out_norm=False.
_base_ = ['../../_base_/zoo_mask_rcnn.py', './coco_instance_1x.py']

model = dict(backbone=dict(out_norm=False))
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'query_embedding': dict(decay_mult=0.), 'relative_pos_bias_local': dict(
        decay_mult=0.), 'cpb': dict(decay_mult=0.), 'temperature': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
)
