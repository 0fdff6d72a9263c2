# The segmentation demo's DeepLabV3 on the long-tail demo data: background and
# 10 shape classes with Zipf-like frequencies (720 training shapes of the most
# frequent, 12 of the rarest), 96x96 images, generated under
# data/dfl_longtail_seg on first use (dfl_mm/demo/longtail.py). 900 iterations,
# the study's longer budget (docs/results.md: the tail half is learned on every
# seed); the efficacy study reports the head and the tail half.
#
#   python tools/train.py configs/demo/deeplabv3_r18_dfl_longtail_demo.py
_base_ = './deeplabv3_r18_dfl_demo.py'

data_root = 'data/dfl_longtail_seg/'
num_classes = 11
model = dict(
    decode_head=dict(num_classes=num_classes, loss_decode=dict(num_classes=num_classes)),
    auxiliary_head=dict(num_classes=num_classes, loss_decode=dict(num_classes=num_classes)))
train_dataloader = dict(dataset=dict(type='DFLLongTailSegDataset', data_root=data_root))
val_dataloader = dict(dataset=dict(type='DFLLongTailSegDataset', data_root=data_root))
test_dataloader = val_dataloader

max_iters = 900
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=max_iters, by_epoch=False)]
