# RetinaNet R50-FPN 1x COCO with DualFocalLoss (gamma 2, alpha 0.25, no class weights: the
# detection default): the entry point of configs/retinanet/retinanet_r50_fpn_dfl_1x_coco.py.
#
#   python tools/train.py configs/retinanet_dfl.py            # 1 GPU
#   tools/dist_train.sh configs/retinanet_dfl.py 8            # 8 GPUs
#
# Variants (learnable gamma, adaptive weights, per-class gamma, R18, LVIS) are in
# configs/retinanet/.
_base_ = './retinanet/retinanet_r50_fpn_dfl_1x_coco.py'
