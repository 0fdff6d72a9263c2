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
import os.path as osp
import runpy
import sys

__all__ = ['train', 'test', 'switch', 'gpu_check', 'main']

HERE = osp.dirname(osp.abspath(__file__))
TOOLS = {'train': 'train.py', 'test': 'test.py', 'switch': 'dfl_switch.py',
         'gpu-check': 'gpu_check.py'}


def _root(name: str) -> str:
    """The folder holding ``name``: the checkout (editable) or dfl_mm/.mim (wheel)."""
    checkout = osp.dirname(HERE)
    roots = ([checkout] if osp.isfile(osp.join(checkout, 'setup.py')) else []) + [
        osp.join(HERE, '.mim')]
    for root in roots:
        if osp.exists(osp.join(root, name)):
            return root
    raise SystemExit(f'dfl_mm: no {name}/ shipped with this installation ({HERE})')


def _config_arg(args):
    """Resolve a shipped config given relative to the configs folder."""
    if args and not args[0].startswith('-') and not osp.exists(args[0]) and '::' not in args[0]:
        relative = args[0][len('configs/'):] if args[0].startswith('configs/') else args[0]
        shipped = osp.join(_root('configs'), 'configs', relative)
        if osp.isfile(shipped):
            return [shipped] + list(args[1:])
    return list(args)


def _run(tool: str, args) -> None:
    script = osp.join(_root('tools'), 'tools', TOOLS[tool])
    sys.argv = [script] + (_config_arg(args) if tool != 'gpu-check' else list(args))
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
    if not argv or argv[0] not in TOOLS:
        raise SystemExit(f"usage: python -m dfl_mm {{{','.join(TOOLS)}}} [args]")
    _run(argv[0], argv[1:])
