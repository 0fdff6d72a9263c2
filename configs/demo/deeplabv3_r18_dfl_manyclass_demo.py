# The long-tail DeepLabV3 demo on a many-class tail: background and 36 visually
# confusable classes (9 shapes x 4 close tones), 800 down to 8 training shapes
# (Zipf, 100:1), 96x96 images, generated under data/dfl_manyclass_seg on first use
# (dfl_mm/demo/segmentation.py).
#
#   python tools/train.py configs/demo/deeplabv3_r18_dfl_manyclass_demo.py
_base_ = './deeplabv3_r18_dfl_longtail_demo.py'

data_root = 'data/dfl_manyclass_seg/'
num_classes = 37
model = dict(
    decode_head=dict(num_classes=num_classes, loss_decode=dict(num_classes=num_classes)),
    auxiliary_head=dict(num_classes=num_classes, loss_decode=dict(num_classes=num_classes)))
dataset = dict(type='DFLManyClassSegDataset', data_root=data_root)
train_dataloader = dict(dataset=dataset)
val_dataloader = test_dataloader = dict(dataset=dataset)
