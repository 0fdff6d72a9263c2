"""The shipped DualFocalLoss settings, one home: ``configs/_base_/dfl_{det,seg}.py``
spell them for configs (a test checks that they agree), ``dfl_mm.apis.switch`` gives
them to any config, ``DFLSSDHead`` takes ``SSD_DFL`` as its default. Plain dicts:
copy before changing one.
"""

__all__ = ['SIGMOID_DFL', 'EQUAL_SIGMOID_DFL', 'SOFTMAX_DFL', 'SSD_DFL']

# dense detection heads with hard labels, in FocalLoss's place (sigmoid, one channel per
# class): gamma 2 and FocalLoss's alpha 0.25 (positives weigh 0.25, negatives 0.75), no
# class weights; the leave-one-set-out choice (docs/results.md)
SIGMOID_DFL = dict(type='DualFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25)
# in the place of a sigmoid loss without that balance (QualityFocalLoss's and
# VarifocalLoss's soft targets, sigmoid CE): gamma 2, equal importance, as the loss it
# replaces (alpha with soft targets is unmeasured)
EQUAL_SIGMOID_DFL = dict(type='DualFocalLoss', use_sigmoid=True, gamma=2.0)
# SSD's softmax over C + 1 channels (the background is a channel: no class weights)
SSD_DFL = dict(type='DualFocalLoss', use_sigmoid=False, gamma=2.0)
# segmentation decode heads (softmax per pixel): learnable gamma, adaptive class weights
SOFTMAX_DFL = dict(type='DualFocalLoss', use_sigmoid=False, gamma=2.0,
                   learnable_gamma='scalar', avg_non_ignore=True, class_weight='adaptive')
