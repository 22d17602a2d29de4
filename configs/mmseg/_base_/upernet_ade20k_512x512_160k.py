# UperNet with a zoo backbone on ADE20K, 512x512 crops, 160k iterations, AdamW + linear warm-up + poly decay,
# 16 images per step (8 GPUs x 2), mixed precision: the NAT/DiNAT papers' segmentation recipe.
_base_ = ['./zoo_upernet.py', './ade20k_512x512_160k.py']

model = dict(data_preprocessor=dict(size=(512, 512)))
