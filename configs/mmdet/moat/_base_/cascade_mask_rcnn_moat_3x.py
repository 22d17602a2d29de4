# MOAT + Cascade Mask R-CNN (FPN, 4conv1fc GIoU box heads) on COCO: the paper's detector (Table 4). The paper trained
# it in TensorFlow with a recipe that deeplab2 does not release; this is mmdet's 3x multi-scale crop recipe of the
# zoo's other Cascade configs (Swin / ConvNeXt / NAT): 36 epochs, AdamW lr 1e-4, weight decay 0.05, none on norms
# and relative position tables, 16 images per step, mixed precision. Not the paper's schedule, so not its numbers.
_base_ = ['../../_base_/zoo_cascade_mask_rcnn.py', '../../_base_/coco_instance_ms_crop_3x.py']

# The paper's downstream backbone: window attention (14x14 at stride 16, 7x7 at stride 32: the sizes of the
# pretrained bias tables, so no table is resized) with global attention in the last block of each MOAT stage, and
# deeplab2's downstream 3x3 average-pool shortcut (moat.get_model's default; classification uses 2x2). Maps that are
# not a multiple of the window are padded, the padded keys masked. The stage outputs are taken as they are
# (deeplab2's endpoints carry no extra norm).
model = dict(
    backbone=dict(
        out_norm=False,
        model_kwargs=dict(window_size=(None, None, (14, 14), (7, 7)), global_attention_at_end=True, pool_size=3),
    ))
