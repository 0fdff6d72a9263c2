"""Console entry points and ``python -m dfl_mm``: the project's tools from an
installed package.

    dfl-train CONFIG [args]        = python tools/train.py CONFIG [args]
    dfl-test CONFIG CKPT [args]    = python tools/test.py ...
    dfl-switch CONFIG [-o OUT]     = python tools/dfl_switch.py ...
    dfl-gpu-check [args]           = python tools/gpu_check.py ...
    python -m dfl_mm train|test|switch|gpu-check [args]

The tools come from ``dfl_mm/.mim/tools`` (an installed wheel) or from the
checkout's ``tools/`` (an editable install). A config that is not a file is
looked up under the shipped configs (``dfl_mm/.mim/configs``), as mim does.
"""
import os
import os.path as osp
import runpy
import sys

__all__ = ['train', 'test', 'switch', 'gpu_check', 'main']

HERE = osp.dirname(osp.dirname(osp.realpath(__file__)))  # the package folder, dfl_mm/
TOOLS = {'train': 'train.py', 'test': 'test.py', 'switch': 'dfl_switch.py',
         'gpu-check': 'gpu_check.py'}
SUMMARY = {'train': 'train a config (tools/train.py)',
           'test': 'test a checkpoint (tools/test.py)',
           'switch': 'write a copy of any mmdet/mmseg config with DualFocalLoss '
                     '(tools/dfl_switch.py)',
           'gpu-check': 'check and time the kernels on this GPU (tools/gpu_check.py)'}
USAGE = ('usage: python -m dfl_mm {' + ','.join(TOOLS) + '} [args]\n\n'
         'The tools of dfl_mm (Dual Focal Loss for OpenMMLab); each takes --help.\n\n'
         'commands:\n' + ''.join(f'  {name:<10} {SUMMARY[name]}\n' for name in TOOLS)
         + '\nA config that is not a file is looked up among the shipped configs, by its '
           'path\nunder configs/ or by its file name alone.')


def _root(name: str) -> str:
    """The folder holding ``name``: the checkout (editable) or dfl_mm/.mim (wheel)."""
    checkout = osp.dirname(HERE)
    roots = ([checkout] if osp.isfile(osp.join(checkout, 'setup.py')) else []) + [
        osp.join(HERE, '.mim')]
    for root in roots:
        if osp.exists(osp.join(root, name)):
            return root
    raise SystemExit(f'dfl_mm: no {name}/ shipped with this installation ({HERE})')


def shipped_config(name: str):
    """The shipped config ``name`` names: a path under ``configs/`` or a unique file
    name (as ``mim`` finds them), or None.

    Raises:
        SystemExit: a file name that several shipped configs share.
    """
    root = osp.join(_root('configs'), 'configs')
    relative = name[len('configs/'):] if name.startswith('configs/') else name
    if osp.isfile(osp.join(root, relative)):
        return osp.join(root, relative)
    if osp.basename(name) != name:
        return None
    found = sorted(osp.join(folder, name) for folder, _, files in os.walk(root)
                   if name in files)
    if len(found) > 1:
        raise SystemExit(f'config {name!r} is not a file and several shipped configs have '
                         f'that name: {found}; give its path')
    return found[0] if found else None


def resolve_config(config: str, tool: str = 'dfl_mm') -> str:
    """The file behind a config argument, for every tool: a path; ``package::path``
    (a config shipped inside mmdet / mmseg, as mmengine's ``_base_`` names them); or a
    config shipped with dfl_mm, by its path under ``configs/`` or its file name.

    Raises:
        SystemExit: naming the argument and what was looked for.
    """
    if osp.isfile(config):
        return osp.abspath(config)
    if '::' in config:
        from mmengine.utils import get_installed_path, is_installed
        package, relative = config.split('::', 1)
        if package != package.lower():  # mmengine's _base_ would not find it
            raise SystemExit(f'{tool}: {config}: package scopes are lower case, as '
                             f"mmengine's _base_ names them: {package.lower()}::{relative}")
        if not is_installed(package):
            raise SystemExit(f'{tool}: {config}: package {package!r} is not installed')
        path = osp.join(get_installed_path(package), '.mim', 'configs', relative)
        if not osp.isfile(path):
            raise SystemExit(f'{tool}: {config}: no such config in {package} ({path})')
        return path
    found = shipped_config(config)
    if found is None:
        raise SystemExit(f'{tool}: config file not found: {config} (nor a shipped config '
                         'of that name under configs/)')
    return found


def _run(tool: str, args) -> None:
    script = osp.join(_root('tools'), 'tools', TOOLS[tool])
    args = list(args)
    if tool != 'gpu-check' and args and not args[0].startswith('-'):
        args[0] = resolve_config(args[0], f'dfl-{tool}')  # the one resolver of every tool
    sys.argv = [script] + args
    runpy.run_path(script, run_name='__main__')


def train():
    _run('train', sys.argv[1:])


def test():
    _run('test', sys.argv[1:])


def switch():
    _run('switch', sys.argv[1:])


def gpu_check():
    _run('gpu-check', sys.argv[1:])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ('-h', '--help'):
        print(USAGE)
        raise SystemExit(0)
    if not argv or argv[0] not in TOOLS:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2 if not argv else
                         f'python -m dfl_mm: unknown command {argv[0]!r} (see above)')
    _run(argv[0], argv[1:])
