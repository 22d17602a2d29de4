# transnext_base + UperNet, ADE20K 512x512, 160k iterations: the official single-scale config
# (segmentation/upernet/configs/upernet_transnext_base_512x512_160k_ade20k_ss.py, mmseg 0.x; drop_path_rate 0.7 from
# the official backbone class): AdamW lr 6e-5, weight decay 0.05, none on query embeddings, local position biases,
# CPB MLPs, temperatures and norms; 1500-iteration linear warm-up + poly decay; 2 images per GPU x 8; fp32; sliding-
# window test (512 crops, stride 341). Published mIoU: 53.0 (ss; 53.5/53.7 ms). The official backbone computes the
# position bias at img_size=512 (800 for the multi-scale configs) and interpolates it to other sizes (TransNeXt
# issue #11); ours computes the exact bias of every input size. Stage outputs carry the stages' own LayerNorms:
# out_norm=False.
_base_ = ['../_base_/upernet_ade20k_512x512_160k.py']

model = dict(
    backbone=dict(
        model_name='transnext_base',
        drop_path_rate=0.7,
        out_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/DaiShiResearch/transnext-base-224-1k/resolve/main/transnext_base_224_1k.pth'),
    ),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AttnZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'query_embedding': dict(decay_mult=0.), 'relative_pos_bias_local': dict(
        decay_mult=0.), 'cpb': dict(decay_mult=0.), 'temperature': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
)
