"""The folders are the layers (docs/architecture.md): no module imports a layer
above its own, and the torch-only layers import with the frameworks absent."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import ROOT

PACKAGE = ROOT / 'dfl_mm'
# lowest first; a module may import its own layer and those below it
LAYERS = ('ops', 'core', 'models', 'engine', 'apis', 'demo')
FRAMEWORKS = ('mmengine', 'mmdet', 'mmseg', 'mmcv')


def _layer(module: str):
    parts = module.split('.')
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _imports(path):
    """The dfl_mm modules a file imports (anywhere in it, relative ones resolved)."""
    package = '.'.join(path.relative_to(ROOT).with_suffix('').parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith('dfl_mm'))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith('dfl_mm'):
                yield from (f'{base}.{a.name}' for a in node.names)


@pytest.mark.parametrize('layer', LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer):
    files = sorted((PACKAGE / layer).rglob('*.py'))
    assert files
    for path in files:
        for name in _imports(path):
            above = _layer(name)
            assert above is None or above <= LAYERS.index(layer), \
                f'{path.relative_to(ROOT)} imports {name} (layer {LAYERS[above]})'


def test_the_documented_functional_path_is_the_core_module_and_no_alias_is_left():
    import importlib
    import warnings

    import dfl_mm
    from dfl_mm.core import functional
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # documented API: no warning
        import dfl_mm.functional
    assert dfl_mm.functional is functional
    assert dfl_mm.functional.dual_focal_loss is dfl_mm.dual_focal_loss
    for old in ('loss', 'hooks', 'checks', 'adaptive', 'switch', '_moved'):
        with pytest.raises(ImportError):
            importlib.import_module(f'dfl_mm.{old}')


BLOCKER = '''
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {frameworks!r} or any(
                name.startswith('dfl_mm.' + layer) for layer in {above!r}):
            raise ImportError(name + ' is blocked in this test')
sys.meta_path.insert(0, Blocked())
import importlib
for module in {modules!r}:
    importlib.import_module(module)
import torch
from dfl_mm.core.functional import dual_focal_loss
z = torch.randn(4, 3, requires_grad=True)
dual_focal_loss(z, torch.tensor([0, 1, 2, 3])).backward()
print('imported', len({modules!r}), 'modules')
'''


@pytest.mark.parametrize('layer', ('ops', 'core'))
def test_torch_only_layers_import_with_frameworks_and_upper_layers_blocked(layer):
    modules = sorted('.'.join(p.relative_to(ROOT).with_suffix('').parts).replace(
        '.__init__', '') for p in (PACKAGE / layer).rglob('*.py'))
    above = LAYERS[2:]  # the package root imports core.functional, so core stays importable
    code = BLOCKER.format(frameworks=FRAMEWORKS, above=above, modules=modules)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'imported {len(modules)} modules' in proc.stdout


def test_every_backend_has_the_backend_surface():
    """Each module of ``ops.BACKENDS`` satisfies the ``Backend`` protocol: the names,
    and the parameters of each function in the protocol's order."""
    import inspect

    from dfl_mm import ops
    assert {b.NAME for b in ops.BACKENDS} == {'reference', 'cpu', 'triton'}
    for backend in ops.BACKENDS:
        assert isinstance(backend, ops.Backend), backend.NAME
        assert isinstance(backend.NAME, str)
        assert backend.AUTO_DEVICES is None or isinstance(backend.AUTO_DEVICES, tuple)
        for name in ('applies', 'unavailable', 'forward', 'backward', 'forward_backward'):
            wanted = list(inspect.signature(getattr(ops.Backend, name)).parameters)[1:]
            got = list(inspect.signature(getattr(backend, name)).parameters)
            assert got == wanted, (backend.NAME, name, got, wanted)


def test_no_function_of_the_package_is_60_lines_or_longer():
    """Small functions that each do one job (docstrings included)."""
    longest = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                longest.append((length, f'{path.relative_to(ROOT)}:{node.name}'))
    assert max(longest)[0] < 60, sorted(longest)[-3:]


def test_the_suite_leaves_tools_off_sys_path():
    """Tools are loaded from their files (``testkit.tool``): tools/ on sys.path
    would let tools/test.py shadow the standard library's ``test``."""
    tools = (ROOT / 'tools').resolve()
    assert not [p for p in sys.path if p and Path(p).resolve() == tools]


def test_the_package_has_one_backward_definition():
    """One autograd path: the custom op's registered backward, no autograd.Function."""
    functions, registered = [], 0
    for path in PACKAGE.rglob('*.py'):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(base).endswith('Function') for base in node.bases):
                functions.append(f'{path.name}:{node.name}')
            if isinstance(node, ast.Attribute) and node.attr == 'register_autograd':
                registered += 1
    assert functions == [] and registered == 1, (functions, registered)
