"""dfl_mm: the Dual Focal Loss for OpenMMLab detection and segmentation.

``custom_imports = dict(imports=['dfl_mm'])`` in a config registers
``DualFocalLoss`` (mmengine's root MODELS, found from mmdet's and mmseg's
registries) and ``DFLGammaHook`` (HOOKS). The tools and ``DFLGammaHook`` let
the runner load mmengine checkpoints on torch >= 2.6 without widening any
other ``torch.load`` (see ``dfl_mm.checkpoint``).

The loss itself (``dfl_mm.functional`` and the backends in ``dfl_mm.ops``)
needs only torch: without mmengine, ``import dfl_mm`` gives
``dual_focal_loss`` and the registered adapters raise an ImportError that
says so.
"""
from .functional import dual_focal_loss
from .version import __version__

_ADAPTERS = {
    'DualFocalLoss': 'loss', 'DFLGammaHook': 'hooks', 'gamma_scalars': 'hooks',
    'allow_mmengine_checkpoints': 'checkpoint', 'mmengine_checkpoint_loading': 'checkpoint',
    'scope_checkpoint_loads': 'checkpoint'}
__all__ = ['dual_focal_loss', '__version__', *_ADAPTERS]

try:
    import mmengine  # noqa: F401
except ImportError:
    mmengine = None

if mmengine is not None:
    from .checkpoint import (allow_mmengine_checkpoints, mmengine_checkpoint_loading,
                             scope_checkpoint_loads)
    from .hooks import DFLGammaHook, gamma_scalars
    from .loss import DualFocalLoss

    def _register_demos():
        """Make the demo datasets (and the demo's metric) known to mmdet's and mmseg's
        registries, so a config that inherits a demo needs only ``imports=['dfl_mm']``:
        a lazy location of the registry (imported with the framework's own
        datasets, at the first lookup), or at once if that lookup happened."""
        import importlib
        for framework, demo in (('mmdet', 'dfl_mm.demo.detection'),
                                ('mmseg', 'dfl_mm.demo.segmentation')):
            try:
                registry = importlib.import_module(f'{framework}.registry')
            except ImportError:
                continue
            for name in ('DATASETS', 'METRICS'):
                table = getattr(registry, name)
                if table._imported:
                    importlib.import_module(demo)
                elif demo not in table._locations:
                    table._locations = list(table._locations) + [demo]

    _register_demos()
else:
    def __getattr__(name):
        if name in _ADAPTERS:
            raise ImportError(f'dfl_mm.{name} needs mmengine (pip install mmengine); '
                              'without it only the loss function is available: '
                              'from dfl_mm.functional import dual_focal_loss')
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
