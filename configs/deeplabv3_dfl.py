# DeepLabV3 R50-D8, Cityscapes 512x1024, 40k, with DualFocalLoss (softmax, learnable
# gamma, adaptive class weights): the entry point of
# configs/deeplabv3/deeplabv3_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py.
#
#   python tools/train.py configs/deeplabv3_dfl.py
#   tools/dist_train.sh configs/deeplabv3_dfl.py 4
#
# Variants (fixed/per-class gamma, no class weights, CE + DFL, ADE20K) are in
# configs/deeplabv3/.
_base_ = './deeplabv3/deeplabv3_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py'
