# MOAT + DeepLabv3+ on ADE20K: the paper's segmenter (Table 5). The paper trained it in TensorFlow with a recipe that
# deeplab2 does not release; this is the zoo's ADE20K recipe (512x512 crops, 160k iterations, AdamW lr 6e-5, weight
# decay 0.01, none on norms and relative position tables, 1500-iteration warm-up, poly decay, 16 images per step,
# mixed precision). Not the paper's schedule, so not its numbers.
_base_ = ['../../_base_/deeplabv3plus_ade20k_512x512_160k.py']

# The backbone as in ../../../mmdet/moat/_base_/cascade_mask_rcnn_moat_3x.py: window attention 14x14 / 7x7 with
# global attention in the last block of each MOAT stage, the 3x3 pool shortcut, stage outputs without extra norms.
# The ASPP runs on the stride-32 level with rates 6 / 12 / 18, deeplab2's rates for its output-stride-32 backbones
# (configs/ade20k/kmax_deeplab/*_os32.textproto); the decoder takes the stride-4 level.
model = dict(
    backbone=dict(
        out_norm=False,
        model_kwargs=dict(window_size=(None, None, (14, 14), (7, 7)), global_attention_at_end=True, pool_size=3),
    ),
    decode_head=dict(dilations=(1, 6, 12, 18)))
