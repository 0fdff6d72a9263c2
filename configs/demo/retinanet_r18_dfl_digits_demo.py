# The long-tail RetinaNet demo on real image content: handwritten digits
# (scikit-learn's load_digits scans, upsampled to 16-32 px) on textured canvases,
# 500 down to 10 training instances (Zipf, 50:1), generated under
# data/dfl_digits_det on first use (dfl_mm/demo/longtail.py; needs scikit-learn).
#
#   python tools/train.py configs/demo/retinanet_r18_dfl_digits_demo.py
_base_ = './retinanet_r18_dfl_longtail_demo.py'

data_root = 'data/dfl_digits_det/'
dataset = dict(type='DFLDigitsCocoDataset', data_root=data_root)
train_dataloader = dict(dataset=dataset)
val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(ann_file=data_root + 'annotations/val.json')
