"""The environment check and checkpoint loading on the installed torch."""
import subprocess
import sys

import pytest
import torch

from testkit import ROOT

pytestmark = pytest.mark.slow  # the environment check

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

    from dfl_mm import mmengine_checkpoint_loading
    hub = MessageHub.get_instance('test_ckpt')
    for value in (1.0, 0.5):
        hub.update_scalar('train/loss', value)
    hub.update_info('iter', 7)
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint({'message_hub': hub.state_dict(), 'meta': {'seed': 1}}, path)
    with mmengine_checkpoint_loading():
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


def _payload_checkpoint(path):
    """A checkpoint whose pickle uses getattr to overwrite HistoryBuffer's 'mean'
    statistics method for the whole process (what a global allow-list admits)."""
    from crafted_pickles import glob, text, write_checkpoint
    payload = (b'\x80\x02' + glob('__builtin__', 'getattr')
               + glob('mmengine.logging.history_buffer', 'HistoryBuffer')
               + text('_statistics_methods') + b'\x86R'  # getattr(HistoryBuffer, ...)
               + text('mean') + glob('__builtin__', 'getattr') + b's.')  # [...]['mean'] = ..
    write_checkpoint(path, payload)


def test_import_leaves_plain_torch_load_as_strict_as_stock_torch(tmp_path):
    import pickle

    import pytest
    from mmengine.logging import MessageHub
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import save_checkpoint

    import dfl_mm  # noqa: F401
    HistoryBuffer()  # registers the default statistics methods
    mean = HistoryBuffer._statistics_methods['mean']
    _payload_checkpoint(tmp_path / 'payload.pth')
    with pytest.raises(pickle.UnpicklingError, match='getattr'):
        torch.load(tmp_path / 'payload.pth', weights_only=True)
    assert HistoryBuffer._statistics_methods['mean'] is mean
    # an mmengine checkpoint: refused outside the scope, as by stock torch
    hub = MessageHub.get_instance('test_ckpt_strict')
    hub.update_scalar('train/loss', 1.0)
    save_checkpoint({'message_hub': hub.state_dict()}, str(tmp_path / 'ckpt.pth'))
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(tmp_path / 'ckpt.pth', weights_only=True)
