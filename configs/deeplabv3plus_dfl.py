# DeepLabV3+ R50-D8, Cityscapes 512x1024, 40k, with DualFocalLoss (softmax, learnable
# gamma, adaptive class weights): the entry point of
# configs/deeplabv3plus/deeplabv3plus_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py.
#
#   python tools/train.py configs/deeplabv3plus_dfl.py
#   tools/dist_train.sh configs/deeplabv3plus_dfl.py 4
#
# Variants (R18) are in configs/deeplabv3plus/; the loss variants of
# configs/deeplabv3/ (fixed/per-class gamma, no class weights, CE + DFL) carry over.
_base_ = './deeplabv3plus/deeplabv3plus_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py'
