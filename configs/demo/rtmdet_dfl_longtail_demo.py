# The RTMDet demo (configs/demo/rtmdet_dfl_demo.py) on the long-tail demo data:
# 10 shape classes, 720 down to 12 training instances, generated under
# data/dfl_longtail_det on first use. The efficacy study reports the head and tail halves.
#
#   python tools/train.py configs/demo/rtmdet_dfl_longtail_demo.py
_base_ = './rtmdet_dfl_demo.py'

custom_imports = dict(
    imports=['dfl_mm', 'dfl_mm.demo.detection'], allow_failed_imports=False)

data_root = 'data/dfl_longtail_det/'
num_classes = 10
model = dict(bbox_head=dict(num_classes=num_classes, loss_cls=dict(num_classes=num_classes)))
train_dataloader = dict(dataset=dict(type='DFLLongTailCocoDataset', data_root=data_root))
val_dataloader = dict(dataset=dict(type='DFLLongTailCocoDataset', data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
