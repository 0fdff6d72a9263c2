"""Every shipped config takes its DualFocalLoss from one preset: resolved, each DFL
dict equals ``dfl_mm.apis.switch``'s preset of its kind, differs only where the file's
name says it does (a variant), and restates no default of ``DualFocalLoss``."""
import inspect
import re
from pathlib import Path

import pytest

from testkit import ROOT

CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)
# a variant word in a file name -> the preset keys that variant changes
VARIANTS = {'learnable': {'learnable_gamma', 'class_weight'}, 'fixed': {'learnable_gamma'},
            'perclass': {'learnable_gamma'}, 'noweights': {'class_weight'},
            'weights': {'class_weight'},
            'static': {'class_weight'},
            'binary': {'use_sigmoid', 'class_weight', 'num_classes'}}  # undoes the inherited
# keys a config gives per model, not per preset
PER_MODEL = {'num_classes', 'loss_weight', 'loss_name', 'activated', 'iou_weighted',
             'channels_last', '_delete_'}

# heads whose loss_cls takes soft quality targets (QualityFocalLoss's / VarifocalLoss's
# place): the equal-importance preset; TOOD's initial_loss_cls is a FocalLoss
QUALITY_HEADS = {'GFLHead', 'TOODHead', 'VFNetHead', 'RTMDetSepBNHead'}


def _head_type(model, path):
    head = model
    for key in path.split('.')[1:-1]:
        head = head[key]
    return head.get('type')


def _dfl_dicts(node, path='model'):
    if isinstance(node, dict):
        if node.get('type') == 'DualFocalLoss':
            yield path, node
        for key, value in node.items():
            yield from _dfl_dicts(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _dfl_dicts(value, f'{path}[{i}]')


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: str(p.relative_to(ROOT / 'configs')))
def test_config_losses_are_the_presets(config):
    from mmengine.config import Config

    from dfl_mm import DualFocalLoss
    from dfl_mm.apis.switch import EQUAL_SIGMOID_DFL, SIGMOID_DFL, SOFTMAX_DFL
    model = Config.fromfile(str(config)).to_dict().get('model', {})
    found = list(_dfl_dicts(model))
    assert found, f'{config.name} holds no DualFocalLoss'
    defaults = {name: p.default for name, p in
                inspect.signature(DualFocalLoss.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    words = set(re.split(r'[_-]', config.stem))
    allowed = set().union(*(keys for word, keys in VARIANTS.items() if word in words))
    for path, loss in found:
        seg = 'decode_head' in path or 'auxiliary_head' in path
        quality = path.endswith('.loss_cls') and _head_type(model, path) in QUALITY_HEADS
        preset = SOFTMAX_DFL if seg else EQUAL_SIGMOID_DFL if quality else SIGMOID_DFL
        differs = {k for k in set(preset) | (set(loss) - PER_MODEL)
                   if loss.get(k, defaults.get(k)) != preset.get(k, defaults.get(k))}
        assert differs <= allowed, (f'{config.name} {path} diverges from the preset in '
                                    f'{sorted(differs - allowed)}: {loss}')
        restated = {k for k, v in loss.items() if k not in preset and k in defaults
                    and k not in allowed | {'loss_name'} and v == defaults[k]}
        assert not restated, f'{config.name} {path} restates defaults {sorted(restated)}'


def test_each_entry_config_is_an_alias_of_the_model_it_inherits():
    """The top-level entry configs are one-line children of a folder's config; the
    metafile lists that config once, with the entry point as its alias."""
    import yaml
    for entry in sorted((ROOT / 'configs').glob('*.py')):
        base = re.search(r"_base_ = '\./([\w/.-]+)'", entry.read_text()).group(1)
        meta = yaml.safe_load((ROOT / 'configs' / Path(base).parent / 'metafile.yml')
                              .read_text())
        models = [m for m in meta['Models'] if m['Config'] == f'configs/{base}']
        assert len(models) == 1, base
        assert entry.stem in models[0]['Alias']
        assert all(m['Config'] != f'configs/{entry.name}' for m in meta['Models'])


def test_import_dfl_mm_stands_in_for_every_name_its_framework_modules_register():
    """``imports=['dfl_mm']`` is enough (no registry internals written): each name the
    mmdet / mmseg modules register has a stand-in in mmengine's root registry, and no
    name they register lacks one."""
    import importlib

    import mmdet.registry
    import mmseg.registry

    import dfl_mm
    for registry, module, names in dfl_mm.REGISTERED_ON_IMPORT:
        importlib.import_module(module)
        registered = {name for framework in (mmdet.registry, mmseg.registry)
                      for name, cls in getattr(framework, registry).module_dict.items()
                      if cls.__module__ == module}
        assert registered == set(names), (module, registered ^ set(names))
        root = getattr(importlib.import_module('mmengine.registry'), registry)
        assert all(root.get(name).dfl_module == module for name in names)
