"""What the test files share that is not a fixture: the checkout's root and helpers
for demo data, work dirs and distributed runs (``from testkit import ...``; the
fixtures stay in ``conftest.py``)."""
import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool(path: str):
    """The tool script ``tools/<path>.py`` as a module, loaded from its file as
    ``tools.<path with dots>``: nothing of tools/ goes on ``sys.path`` (where
    ``tools/test.py`` would shadow the standard library's ``test``)."""
    import importlib.util
    name = 'tools.' + path.replace('/', '.')
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{path}.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def link_data(shared, target):
    """Make target/data point at the session's demo data."""
    (shared / 'data').mkdir(exist_ok=True)
    if not (target / 'data').exists():
        os.symlink(shared / 'data', target / 'data')


def read_scalars(work_dir):
    """All entries of the scalars.json files under an mmengine work dir."""
    import glob
    import json
    files = glob.glob(os.path.join(str(work_dir), '*', 'vis_data', 'scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    return [json.loads(line) for f in files for line in open(f)]


def write_probe_config(path, base, demo_module, hook):
    """A config that inherits ``base`` and adds a test hook from dfl_probe."""
    path.write_text(
        f'_base_ = {str(base)!r}\n'
        f"custom_imports = dict(imports=['dfl_mm', {demo_module!r}, 'dfl_probe'])\n"
        f"custom_hooks = [dict(type='DFLStepHook'), dict(type={hook!r})]\n")
    return str(path)


def run_dist_train(config, work_dir, options, nproc=2):
    """tools/dist_train.sh on CPU ranks; returns each rank's dumped state."""
    import json
    import subprocess
    port = 29500 + os.getpid() % 2000
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(port), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(ROOT / 'tests' / 'helpers'), str(ROOT)]))
    proc = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), str(nproc),
         '--work-dir', str(work_dir), '--cfg-options', *options],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((work_dir / f'state_rank{r}.json').read_text()) for r in range(nproc)]


@contextmanager
def backends_selected():
    """The names of the backends ``dfl_mm.ops.select`` chose in the block. Under a
    named backend (``ops.use``) that is the one that ran: a named backend that fails
    raises instead of handing the call over."""
    from dfl_mm import ops
    chosen, select = [], ops.select

    def recording(*args, **kwargs):
        backend = select(*args, **kwargs)
        chosen.append(backend.NAME)
        return backend
    ops.select = recording
    try:
        yield chosen
    finally:
        ops.select = select


def loss_and_grads(backend, logits, target, gamma=2.0, use_sigmoid=True, *, expect=None,
                   **kwargs):
    """``dual_focal_loss`` with ``backend`` named (``dfl_mm.ops.use``): the loss and its
    gradients on the logits and on gamma, asserting that the backend which ran is
    ``expect`` (default: ``backend``), so a backend that does not apply to a call
    can not pass a test by routing it to the reference."""
    import torch

    from dfl_mm import dual_focal_loss, ops
    z = logits.detach().clone().requires_grad_()
    g = torch.as_tensor(gamma, dtype=logits.dtype).clone().requires_grad_()
    # the Neurocomputing form has one implementation, torch ops: no backend runs
    wanted = [expect or backend] if kwargs.get('form', 'arxiv2019') == 'arxiv2019' else []
    with ops.use(backend), backends_selected() as ran:
        loss = dual_focal_loss(z, target, g, use_sigmoid=use_sigmoid, **kwargs)
        assert sorted(set(ran)) == wanted, f'{ran} ran, not {wanted}'
        grad_z, grad_g = torch.autograd.grad(loss.sum(), (z, g))
    return loss.detach(), grad_z, grad_g


# the state a DualFocalLoss remembers (tests of its state, in the files of its modules)
def adaptive_loss(use_sigmoid=False, apply_to='row', basis='frequency', classes=3):
    from dfl_mm import DualFocalLoss
    return DualFocalLoss(use_sigmoid=use_sigmoid, class_weight='adaptive', num_classes=classes,
                         adaptive_weight=dict(apply_to=apply_to, basis=basis, power=1.0))


def state_of(loss):
    """Everything the loss remembers: the state dict and the open step."""
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    if loss.adaptive is not None:
        state['pending'] = loss.adaptive.pending.clone()
        state['calls'] = loss.adaptive._calls.clone()
    return state


def assert_same_state(before, after):
    import torch
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], torch.Tensor):
            assert torch.equal(before[key], after[key]), key
        else:
            assert before[key] == after[key], key
