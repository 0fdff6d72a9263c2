"""dfl_mm: the Dual Focal Loss for OpenMMLab detection and segmentation.

``custom_imports = dict(imports=['dfl_mm'])`` in a config registers
``DualFocalLoss`` (mmengine's root MODELS, found from mmdet's and mmseg's
registries), ``DFLStepHook`` (HOOKS) and stand-ins (``REGISTERED_ON_IMPORT``) of
``DFLSSDHead`` and the demo datasets and metric, whose modules need mmdet or mmseg.
The tools and ``DFLStepHook`` let the runner load mmengine checkpoints on torch >= 2.6
without widening any other ``torch.load`` (see ``dfl_mm.engine.checkpoint``).

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

# what the framework modules register (a test checks these lists against them):
# (mmengine root registry, module, names)
REGISTERED_ON_IMPORT = (
    ('DATASETS', 'dfl_mm.demo.detection', (
        'DFLDemoCocoDataset', 'DFLLongTailCocoDataset', 'DFLManyClassCocoDataset',
        'DFLSmallCrowdCocoDataset', 'DFLDigitsCocoDataset', 'DFLGlyphsCocoDataset',
        'DFLStrokesCocoDataset')),
    ('DATASETS', 'dfl_mm.demo.segmentation', (
        'DFLDemoSegDataset', 'DFLDemoBinarySegDataset', 'DFLLongTailSegDataset',
        'DFLManyClassSegDataset')),
    ('METRICS', 'dfl_mm.engine.metrics', ('DFLPerClassIoUMetric', )),
    ('MODELS', 'dfl_mm.models.heads', ('DFLSSDHead', )))
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

    def _stand_in(module: str, name: str):
        """What ``import dfl_mm`` registers under ``name`` in mmengine's root registry
        (public ``register_module``; mmdet's and mmseg's registries fall back to
        their root): building it imports ``module``, which registers the real
        ``name`` in its framework's registry (found first from then on), and
        builds that. Importing mmdet and mmseg with every ``import dfl_mm``
        instead costs seconds; and a config's own ``custom_imports`` replaces (not
        extends) its base's, so ``imports=['dfl_mm']`` must be enough."""
        import importlib

        def build(*args, **kwargs):
            return getattr(importlib.import_module(module), name)(*args, **kwargs)
        build.__name__ = build.__qualname__ = name
        build.dfl_module = module  # where the real one lives (``launch`` reads it)
        return build

    def _register_stand_ins():
        import mmengine.registry as root
        for registry, module, names in REGISTERED_ON_IMPORT:
            table = getattr(root, registry)
            for name in names:
                if table.get(name) is None:
                    table.register_module(name=name, module=_stand_in(module, name))

    _register_stand_ins()
else:
    def __getattr__(name):
        if name in _ADAPTERS:
            raise ImportError(f'dfl_mm.{name} needs mmengine (pip install mmengine); '
                              'without it only the loss function is available: '
                              'from dfl_mm.functional import dual_focal_loss')
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
