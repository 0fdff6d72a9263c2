# The long-tail RetinaNet demo on a many-class tail: 36 visually confusable classes
# (9 shapes x 4 close tones), 800 down to 8 training instances (Zipf, 100:1),
# generated under data/dfl_manyclass_det on first use (dfl_mm/demo/longtail.py).
#
#   python tools/train.py configs/demo/retinanet_r18_dfl_manyclass_demo.py
_base_ = './retinanet_r18_dfl_longtail_demo.py'

data_root = 'data/dfl_manyclass_det/'
num_classes = 36
model = dict(bbox_head=dict(num_classes=num_classes, loss_cls=dict(num_classes=num_classes)))
dataset = dict(type='DFLManyClassCocoDataset', data_root=data_root)
train_dataloader = dict(dataset=dataset)
val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(ann_file=data_root + 'annotations/val.json')
