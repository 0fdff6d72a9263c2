"""dfl_mm: the Dual Focal Loss for OpenMMLab detection and segmentation.

``custom_imports = dict(imports=['dfl_mm'])`` in a config registers
``DualFocalLoss`` (mmengine's root MODELS, found from mmdet's and mmseg's
registries) and ``DFLGammaHook`` (HOOKS). What lives in mmdet's or mmseg's own
registries is registered by importing its module, the OpenMMLab way (a config
names it in ``custom_imports``): ``dfl_mm.models.heads`` (``DFLSSDHead``),
``dfl_mm.engine.metrics`` (``DFLPerClassIoUMetric``) and the demo datasets
(``dfl_mm.demo.detection``, ``dfl_mm.demo.segmentation``). The tools and ``DFLGammaHook`` let
the runner load mmengine checkpoints on torch >= 2.6 without widening any
other ``torch.load`` (see ``dfl_mm.engine.checkpoint``).

The layers are folders (``docs/architecture.md``): ``ops`` (backends) and ``core``
(the loss function, checks, conventions) need only torch; ``models`` (what mmengine
builds), ``engine`` (hooks, checkpoint scope) and ``apis`` (launch, switch, cli)
sit above them. The loss itself (``dfl_mm.functional``, i.e.
``dfl_mm.core.functional``, and the backends in ``dfl_mm.ops``) needs only torch:
without mmengine, ``import dfl_mm`` gives
``dual_focal_loss`` and the registered adapters raise an ImportError that
says so.
"""
from .core.functional import dual_focal_loss
from .version import __version__

_ADAPTERS = {
    'DualFocalLoss': 'models.loss', 'DFLGammaHook': 'engine.hooks',
    'gamma_scalars': 'engine.hooks', 'allow_mmengine_checkpoints': 'engine.checkpoint',
    'mmengine_checkpoint_loading': 'engine.checkpoint',
    'scope_checkpoint_loads': 'engine.checkpoint'}
__all__ = ['dual_focal_loss', '__version__', *_ADAPTERS]

try:
    import mmengine  # noqa: F401
except ImportError:
    mmengine = None

if mmengine is not None:
    from .engine.checkpoint import (  # noqa: F401  (the package's API, __all__)
        allow_mmengine_checkpoints,
        mmengine_checkpoint_loading,
        scope_checkpoint_loads,
    )
    from .engine.hooks import DFLGammaHook, gamma_scalars  # noqa: F401
    from .models.loss import DualFocalLoss  # noqa: F401
else:
    def __getattr__(name):
        if name in _ADAPTERS:
            raise ImportError(f'dfl_mm.{name} needs mmengine (pip install mmengine); '
                              'without it only the loss function is available: '
                              'from dfl_mm.functional import dual_focal_loss')
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
