# The long-tail RetinaNet demo on stroke-drawn pictograms: 24 classes of 3-5
# polylines, cut by the image border and occluding one another, 500 down to 10
# training instances (Zipf, 50:1), generated under data/dfl_strokes_det on first use
# (dfl_mm/demo/rendered.py: no rendering code shared with the shapes tails).
#
#   python tools/train.py configs/demo/retinanet_r18_dfl_strokes_demo.py
_base_ = './retinanet_r18_dfl_longtail_demo.py'

data_root = 'data/dfl_strokes_det/'
num_classes = 24
model = dict(bbox_head=dict(num_classes=num_classes, loss_cls=dict(num_classes=num_classes)))
dataset = dict(type='DFLStrokesCocoDataset', data_root=data_root)
train_dataloader = dict(dataset=dataset)
val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(ann_file=data_root + 'annotations/val.json')
