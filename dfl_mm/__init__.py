"""dfl_mm: the Dual Focal Loss for OpenMMLab detection and segmentation.

``custom_imports = dict(imports=['dfl_mm'])`` in a config registers
``DualFocalLoss`` (mmengine's root MODELS, found from mmdet's and mmseg's
registries) and ``DFLGammaHook`` (HOOKS).
"""
from .functional import dual_focal_loss
from .loss import DualFocalLoss
from .version import __version__

__all__ = ['DualFocalLoss', 'dual_focal_loss', '__version__']

from .checkpoint import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()
