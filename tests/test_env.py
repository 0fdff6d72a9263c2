"""The environment check and checkpoint loading on the installed torch."""
import subprocess
import sys

import torch

from conftest import ROOT

CHECK_ENV = str(ROOT / 'tools' / 'check_env.py')


def test_check_env_passes():
    proc = subprocess.run([sys.executable, CHECK_ENV], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'mmcv compiled ops: ok' in proc.stdout and 'environment OK' in proc.stdout


def test_check_env_names_missing_mmcv_ops():
    # None in sys.modules makes `import mmcv._ext` fail, as with mmcv-lite
    code = ("import sys, runpy; sys.modules['mmcv._ext'] = None; sys.argv = ['check_env.py'];"
            f"runpy.run_path({CHECK_ENV!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert 'FAILED [mmcv ops]' in proc.stderr and 'mmcv._ext' in proc.stderr
    assert 'tools/install.sh' in proc.stderr


def test_mmengine_checkpoint_with_history_loads_weights_only(tmp_path):
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint

    import dfl_mm  # noqa: F401  (allow-lists mmengine's checkpoint types)
    hub = MessageHub.get_instance('test_ckpt')
    for value in (1.0, 0.5):
        hub.update_scalar('train/loss', value)
    hub.update_info('iter', 7)
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint({'message_hub': hub.state_dict(), 'meta': {'seed': 1}}, path)
    loaded = torch.load(path, weights_only=True)
    restored = MessageHub.get_instance('test_ckpt_restored')
    restored.load_state_dict(loaded['message_hub'])
    assert restored.get_scalar('train/loss').current() == 0.5
    assert restored.get_info('iter') == 7


def test_checkpoints_still_refuse_code(tmp_path):
    """The allow-list does not open weights_only loading to arbitrary objects."""
    import pickle

    import pytest

    import dfl_mm  # noqa: F401

    class Evil:
        def __reduce__(self):
            return (print, ('pwned', ))

    path = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
