# Ablation: DualFocalLoss without class weights (no adaptive weights), the
# shipped default before adaptive class weights. For fixed weights from the
# dataset instead, run `python tools/analysis/class_weights.py
# configs/deeplabv3_dfl.py` and set class_weight to the .npy it writes.
_base_ = './deeplabv3_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(loss_decode=dict(class_weight=None)),
    auxiliary_head=dict(loss_decode=dict(class_weight=None)))
