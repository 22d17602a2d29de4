# BiFormer + UperNet on ADE20K, 512x512, 160k iterations: the official semantic_segmentation/configs/ade20k/
# upernet.biformer_*.py, which follow UniFormer / CSWin, i.e. the shared UperNet recipe here (AdamW lr 6e-5, weight
# decay 0.01, none on norms, 1500-iteration linear warm-up then poly decay, 16 images per step; the official fp16
# uses a static loss scale of 512). Backbone as the official BiFormer_mm: n_win=8 regions per side ("training
# resolution is 512") with auto_pad, BatchNorm synchronised across GPUs (sync_bn; the official backbone converts
# itself), a LayerNorm on every level (official `extra_norms`, eps 1e-6; ours `norm{i}`, eps 1e-5).
_base_ = ['../../_base_/upernet_ade20k_512x512_160k.py']

model = dict(backbone=dict(model_kwargs=dict(n_win=8), pad_multiple=1))
sync_bn = 'torch'
optim_wrapper = dict(loss_scale=512.)
