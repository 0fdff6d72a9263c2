"""dfl_mm: the Dual Focal Loss for OpenMMLab detection and segmentation.

``custom_imports = dict(imports=['dfl_mm'])`` in a config registers
``DualFocalLoss`` (mmengine's root MODELS, found from mmdet's and mmseg's
registries), ``DFLStepHook`` (HOOKS) and, lazily, ``DFLSSDHead`` (mmdet's
MODELS: ``dfl_mm.models.heads``) and the demo datasets. The tools and ``DFLStepHook`` let
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
    'DualFocalLoss': 'models.loss', 'DFLStepHook': 'engine.hooks',
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
    from .engine.hooks import DFLStepHook, gamma_scalars  # noqa: F401
    from .models.loss import DualFocalLoss  # noqa: F401

    def _register_lazily():
        """Make the demo datasets (and the demo's metric) and ``DFLSSDHead`` known to
        mmdet's and mmseg's registries, so a config needs only ``imports=['dfl_mm']``:
        a lazy location of the registry (imported with the framework's own
        modules, at the first lookup), or at once if that lookup happened. mmengine
        has no public call that adds a location after a registry is built; the
        alternative, importing mmdet and mmseg with every ``import dfl_mm``, costs
        seconds, and a config's own ``custom_imports`` replaces (not extends) the
        list its base names."""
        import importlib
        for framework, names, module in (
                ('mmdet', ('DATASETS', 'METRICS'), 'dfl_mm.demo.detection'),
                ('mmseg', ('DATASETS', ), 'dfl_mm.demo.segmentation'),
                ('mmseg', ('METRICS', ), 'dfl_mm.engine.metrics'),
                ('mmdet', ('MODELS', ), 'dfl_mm.models.heads')):
            try:
                registry = importlib.import_module(f'{framework}.registry')
            except ImportError:
                continue
            for name in names:
                table = getattr(registry, name)
                if table._imported:
                    importlib.import_module(module)
                elif module not in table._locations:
                    table._locations = list(table._locations) + [module]

    _register_lazily()
else:
    def __getattr__(name):
        if name in _ADAPTERS:
            raise ImportError(f'dfl_mm.{name} needs mmengine (pip install mmengine); '
                              'without it only the loss function is available: '
                              'from dfl_mm.functional import dual_focal_loss')
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
