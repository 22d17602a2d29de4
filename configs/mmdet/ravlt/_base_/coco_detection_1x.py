# COCO 1x (12 epochs, lr steps at 8 and 11, 500-iteration linear warm-up), single-scale 1333x800 with flips,
# 16 images per step (8 GPUs x 2): the official detection/configs/_base_ (mmdet's schedule_1x).
# COCO boxes; the per-model config sets the optimizer.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# The one place to point at your COCO folder (annotations/, train2017/, val2017/); `--cfg-options data_root=...`
# with downstream.train/test rewrites every dataset and evaluator path below as well.
data_root = 'data/coco/'
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
auto_scale_lr = dict(enable=False, base_batch_size=16)
