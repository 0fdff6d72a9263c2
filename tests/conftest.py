import os
import sys
from pathlib import Path

import pytest
import torch

# Triton kernels run in Triton's CPU interpreter where there is no GPU; the
# switch is read when the kernels are defined (import of dfl_mm), hence here.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
sys.path.insert(0, str(Path(__file__).parent / 'helpers'))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh folder: demo data and work dirs land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope='session')
def shared_data(tmp_path_factory):
    """One folder per session holding generated demo data (data/...)."""
    return tmp_path_factory.mktemp('demo')


def link_data(shared, target):
    """Make target/data point at the session's demo data."""
    (shared / 'data').mkdir(exist_ok=True)
    if not (target / 'data').exists():
        os.symlink(shared / 'data', target / 'data')
