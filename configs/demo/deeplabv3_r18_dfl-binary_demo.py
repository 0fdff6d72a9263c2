# Binary segmentation (blob vs. everything else) with one output channel and
# DualFocalLoss in sigmoid mode; labels are 0/1, ignored pixels stay 255.
#
#   python tools/train.py configs/demo/deeplabv3_r18_dfl-binary_demo.py
_base_ = './deeplabv3_r18_dfl_demo.py'

binary_head = dict(
    num_classes=2,
    out_channels=1,
    threshold=0.5,
    # one channel: the background is not a class of its own, so adaptive class
    # weights would all be 1 (use alpha to weigh the foreground)
    loss_decode=dict(use_sigmoid=True, class_weight=None, num_classes=None))
model = dict(
    decode_head=binary_head,
    auxiliary_head=dict(binary_head, loss_decode=dict(binary_head['loss_decode'], loss_weight=0.4)))
train_dataloader = dict(dataset=dict(type='DFLDemoBinarySegDataset'))
val_dataloader = dict(dataset=dict(type='DFLDemoBinarySegDataset'))
test_dataloader = val_dataloader
