# The detection demo's RetinaNet on the long-tail demo data: 10 shape classes
# with Zipf-like frequencies (720 training instances of the most frequent, 12
# of the rarest), 128x128 images, generated under data/dfl_longtail_det on
# first use (dfl_mm/demo/longtail.py). The efficacy study reports the head and
# the tail half.
#
#   python tools/train.py configs/demo/retinanet_r18_dfl_longtail_demo.py
_base_ = './retinanet_r18_dfl_demo.py'

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
