import os
import sys
from pathlib import Path

import pytest
import torch

# Triton kernels run in Triton's CPU interpreter where there is no GPU; the
# switch is read when the kernels are defined (import of dfl_mm), hence here.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# the tools pick a thread count from the machine's load when OMP_NUM_THREADS is
# unset (dfl_mm.apis.launch.choose_cpu_threads): the suite keeps torch's own
os.environ.setdefault('OMP_NUM_THREADS', str(torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / 'helpers'))


@pytest.fixture
def switch():
    """``switch(name)``: run the rest of the test on backend ``name`` (``dfl_mm.ops.use``);
    ``switch(None)``: back to the environment's setting."""
    from contextlib import ExitStack

    from dfl_mm import ops
    stack = ExitStack()

    def to(name):
        stack.close()
        if name is not None:
            stack.enter_context(ops.use(name))
    yield to
    stack.close()


@pytest.fixture(params=['reference', 'cpu', 'triton'])
def backend(request, switch):
    """Each backend in turn (Triton in its CPU interpreter where there is no GPU). A
    test that takes it must run it: a test whose every call went to another backend
    (one that does not apply to its calls routes them to the reference) errors."""
    from dfl_mm.ops import triton_kernels

    from testkit import backends_selected
    if request.param == 'triton' and not triton_kernels.available():
        pytest.skip('triton is not installed')
    switch(request.param)
    with backends_selected() as selected:
        yield request.param
    if selected and request.param not in selected:
        pytest.fail(f'the backend fixture named {request.param!r}, but every call ran on '
                    f'{sorted(set(selected))}: the test does not test its backend')


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh folder: demo data and work dirs land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope='session')
def shared_data(tmp_path_factory):
    """One folder per session holding generated demo data (data/...)."""
    return tmp_path_factory.mktemp('demo')


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: end-to-end runs (zoo sweep, DDP, packaging, installer); '
        'pytest -m "not slow" is the fast inner loop')
