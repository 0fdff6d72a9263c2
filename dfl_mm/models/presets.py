"""The shipped DualFocalLoss settings, one home: ``configs/_base_/dfl_{det,seg}.py``
spell them for configs (a test checks that they agree), ``dfl_mm.apis.switch`` gives
them to any config, ``DFLSSDHead`` takes ``SSD_DFL`` as its default. Plain dicts:
copy before changing one.
"""

__all__ = ['SIGMOID_DFL', 'SOFTMAX_DFL', 'SSD_DFL']

# dense detection heads (sigmoid, one channel per class): gamma 2, no class weights (the
# leave-one-set-out choice, docs/results.md: adaptive weights lost on held-out long tails)
SIGMOID_DFL = dict(type='DualFocalLoss', use_sigmoid=True, gamma=2.0)
# SSD's softmax over C + 1 channels (the background is a channel: no class weights)
SSD_DFL = dict(type='DualFocalLoss', use_sigmoid=False, gamma=2.0)
# segmentation decode heads (softmax per pixel): learnable gamma, adaptive class weights
SOFTMAX_DFL = dict(type='DualFocalLoss', use_sigmoid=False, gamma=2.0,
                   learnable_gamma='scalar', avg_non_ignore=True, class_weight='adaptive')
