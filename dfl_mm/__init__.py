"""dfl_mm: the Dual Focal Loss for OpenMMLab detection and segmentation.

``custom_imports = dict(imports=['dfl_mm'])`` in a config registers
``DualFocalLoss`` (mmengine's root MODELS, found from mmdet's and mmseg's
registries) and ``DFLGammaHook`` (HOOKS), and lets mmengine checkpoints load
on torch >= 2.6 (see ``dfl_mm.checkpoint``).
"""
from .checkpoint import allow_mmengine_checkpoints
from .functional import dual_focal_loss
from .hooks import DFLGammaHook, gamma_scalars
from .loss import DualFocalLoss
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['DualFocalLoss', 'DFLGammaHook', 'allow_mmengine_checkpoints',
           'dual_focal_loss', 'gamma_scalars', '__version__']
