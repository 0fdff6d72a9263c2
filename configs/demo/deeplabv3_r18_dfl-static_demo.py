# The segmentation demo with fixed class weights instead of adaptive ones:
# the weights `python tools/analysis/class_weights.py
# configs/demo/deeplabv3_r18_dfl_demo.py` prints for the demo training set
# (same formula as the adaptive weights; DFL's static class_weight multiplies
# the class-c element of every pixel).
_base_ = './deeplabv3_r18_dfl_demo.py'

static_weights = [0.2274, 0.5526, 1.5484, 1.6716]  # background, blob, line, dot
model = dict(
    decode_head=dict(loss_decode=dict(class_weight=static_weights)),
    auxiliary_head=dict(loss_decode=dict(class_weight=static_weights)))
