# The long-tail RetinaNet demo on small, crowded objects: the ten shapes at 8-12 px,
# ~18 to a 128 px image, 2500 down to 42 training instances (Zipf, 60:1), generated
# under data/dfl_smallcrowd_det on first use (dfl_mm/demo/longtail.py). The anchors
# start at 8 px (octave base scale 1 at stride 8) so that every object has one.
#
#   python tools/train.py configs/demo/retinanet_r18_dfl_smallcrowd_demo.py
_base_ = './retinanet_r18_dfl_longtail_demo.py'

data_root = 'data/dfl_smallcrowd_det/'
model = dict(bbox_head=dict(anchor_generator=dict(octave_base_scale=1)))
dataset = dict(type='DFLSmallCrowdCocoDataset', data_root=data_root)
train_dataloader = dict(dataset=dataset)
val_dataloader = test_dataloader = dict(dataset=dataset)
val_evaluator = test_evaluator = dict(ann_file=data_root + 'annotations/val.json')
