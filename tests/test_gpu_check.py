"""tools/gpu_check.py and the torch-only core, on CPU (Triton's interpreter).

The GPU box has torch and Triton only: both are run here with mmengine, mmdet,
mmseg and mmcv made unimportable.
"""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dfl_mm.ops import triton_kernels as triton_dfl

from testkit import tool

ROOT = Path(__file__).resolve().parents[1]
# makes the OpenMMLab packages unimportable, as on a plain torch + Triton machine
BLOCK_OPENMMLAB = '''
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmengine', 'mmdet', 'mmseg', 'mmcv'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, _Blocked())
'''


def _run_blocked(code, timeout=300, **env):
    import os
    environment = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, '-c', BLOCK_OPENMMLAB + code], cwd=str(ROOT),
                          env=environment, capture_output=True, text=True, timeout=timeout)


def test_core_imports_and_trains_without_openmmlab():
    proc = _run_blocked('''
import torch, dfl_mm
from dfl_mm.functional import dual_focal_loss
assert 'mmengine' not in sys.modules
from dfl_mm import ops
z = torch.randn(20, 4, requires_grad=True)
gamma = torch.tensor(2.0, requires_grad=True)
dual_focal_loss(z, torch.randint(0, 5, (20,)), gamma).backward()
assert z.grad.abs().sum() > 0 and gamma.grad != 0
for name in ('reference', 'cpu', 'triton'):  # every backend of the registry, blocked stack
    with ops.use(name):
        dual_focal_loss(z, torch.randint(0, 5, (20,)), gamma).backward()
try:
    dfl_mm.DualFocalLoss
except ImportError as error:
    print('adapter:', error)
''')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "adapter: dfl_mm.DualFocalLoss needs mmengine" in proc.stdout


def test_gpu_check_help_says_what_it_prints():
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'gpu_check.py'), '--help'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for part in ('(a) accuracy', '(b) speed', '(c) memory', 'RetinaNet', 'DeepLab',
                 'sigmoid_focal_loss', 'F.cross_entropy', 'clone()', 'Exit status 1'):
        assert part in proc.stdout, part


@pytest.mark.skipif(not triton_dfl.available(), reason='triton is not installed')
def test_gpu_check_runs_on_cpu_with_torch_and_triton_only():
    proc = _run_blocked('''
import runpy
sys.argv = ['gpu_check.py', '--device', 'cpu']
runpy.run_path('tools/gpu_check.py', run_name='__main__')
''')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert '16 of 16 accuracy checks passed' in out
    assert 'sigmoid float32: pass; sigmoid bfloat16: pass; softmax float32: pass' in out
    for row in ('| softmax | bfloat16 | ignore + weights |', '| sigmoid | float32 | per-class '
                'gamma |', 'DFL (C kernel), fixed gamma', 'DFL, fixed gamma (PyTorch core)',
                'torchvision sigmoid_focal_loss', 'F.cross_entropy', 'torch.bfloat16'):
        assert row in out, row


@pytest.mark.skipif(not triton_dfl.available(), reason='triton is not installed')
def test_gpu_check_fails_a_wrong_kernel(monkeypatch):
    gpu_check = tool('gpu_check')
    launch = triton_dfl._launch

    def wrong(inputs, gamma, mode, upstream=None):
        out, grad, gamma_grad = launch(inputs, gamma, mode, upstream)
        if inputs.use_sigmoid:
            return out, grad * 1.05, gamma_grad  # d/d logits 5 % off
        return out, grad, gamma_grad

    monkeypatch.setattr(triton_dfl, '_launch', wrong)
    monkeypatch.setattr(triton_dfl, '_probed', {})  # its probe verdicts stay here
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        rows = gpu_check.accuracy_rows('cpu', small=True)
    verdicts = {(r['mode'], r['dtype'], r['case']): r['ok'] for r in rows}
    assert not any(ok for (mode, _, _), ok in verdicts.items() if mode == 'sigmoid')
    assert all(ok for (mode, _, _), ok in verdicts.items() if mode == 'softmax')
    failed = gpu_check.print_accuracy(rows, {'sigmoid float32': 'mismatch'})
    assert failed == 8
