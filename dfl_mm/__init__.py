"""dfl_mm: the Dual Focal Loss for OpenMMLab detection and segmentation.

``custom_imports = dict(imports=['dfl_mm'])`` in a config registers
``DualFocalLoss`` (mmengine's root MODELS, found from mmdet's and mmseg's
registries) and ``DFLGammaHook`` (HOOKS). The tools and ``DFLGammaHook`` let
the runner load mmengine checkpoints on torch >= 2.6 without widening any
other ``torch.load`` (see ``dfl_mm.checkpoint``).
"""
from .checkpoint import (allow_mmengine_checkpoints, mmengine_checkpoint_loading,
                         scope_checkpoint_loads)
from .functional import dual_focal_loss
from .hooks import DFLGammaHook, gamma_scalars
from .loss import DualFocalLoss
from .version import __version__

__all__ = ['DualFocalLoss', 'DFLGammaHook', 'allow_mmengine_checkpoints',
           'mmengine_checkpoint_loading', 'scope_checkpoint_loads',
           'dual_focal_loss', 'gamma_scalars', '__version__']
