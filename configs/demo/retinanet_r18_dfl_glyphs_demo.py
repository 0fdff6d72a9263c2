# The long-tail RetinaNet demo on rendered characters: 36 glyphs (0-9, A-Z) of
# Pillow's built-in font with the confusable pairs O/0, I/1, S/5, B/8, Z/2, G/6 split
# between head and tail, 600 down to 8 training instances (Zipf, 75:1), generated
# under data/dfl_glyphs_det on first use (dfl_mm/demo/rendered.py: no rendering code
# shared with the shapes tails).
#
#   python tools/train.py configs/demo/retinanet_r18_dfl_glyphs_demo.py
_base_ = './retinanet_r18_dfl_longtail_demo.py'

data_root = 'data/dfl_glyphs_det/'
num_classes = 36
model = dict(bbox_head=dict(num_classes=num_classes, loss_cls=dict(num_classes=num_classes)))
dataset = dict(type='DFLGlyphsCocoDataset', data_root=data_root)
train_dataloader = dict(dataset=dataset)
val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(ann_file=data_root + 'annotations/val.json')
