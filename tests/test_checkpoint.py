"""The scoped checkpoint loads (dfl_mm.engine.checkpoint): crafted files are refused
whatever route loads them; real mmengine checkpoints still load."""
import builtins
import pickle

import pytest
import torch
from mmengine.logging import MessageHub

from crafted_pickles import glob, text, write_checkpoint
from testkit import tool


# ------------------------------------------------ crafted checkpoints
def _setitems_payload(attribute, key):
    """getattr(getattr(HistoryBuffer, '__init__'), attribute)[key] = 'dfl-poison'."""
    init = (glob('__builtin__', 'getattr')
            + glob('mmengine.logging.history_buffer', 'HistoryBuffer')
            + text('__init__') + b'\x86R')
    return (b'\x80\x02' + glob('__builtin__', 'getattr') + init + text(attribute)
            + b'\x86R' + b'(' + text(key) + text('dfl-poison') + b'u.')


def _statistics_swap_payload():
    """A HistoryBuffer whose state rebinds 'mean' to HistoryBuffer.max."""
    hb = glob('mmengine.logging.history_buffer', 'HistoryBuffer')
    stat = glob('__builtin__', 'getattr') + hb + text('max') + b'\x86R'
    return (b'\x80\x02' + hb + b')\x81' + b'}' + text('statistics_methods') + b'}'
            + text('mean') + stat + b'ssb.')


PAYLOADS = {'globals': ('__globals__', 'np'), 'builtins': ('__builtins__', 'dfl_poison')}


@pytest.fixture
def crafted(tmp_path):
    """Crafted checkpoints, and a check that nothing they target was written."""
    from mmengine.logging import history_buffer
    paths = {}
    for name, (attribute, key) in PAYLOADS.items():
        paths[name] = str(tmp_path / f'{name}.pth')
        write_checkpoint(paths[name], _setitems_payload(attribute, key))
    paths['swap'] = str(tmp_path / 'swap.pth')
    write_checkpoint(paths['swap'], _statistics_swap_payload())
    np_module = history_buffer.np
    methods = dict(history_buffer.HistoryBuffer._statistics_methods)

    def untouched():
        assert history_buffer.np is np_module
        assert not hasattr(builtins, 'dfl_poison')
        assert history_buffer.HistoryBuffer._statistics_methods == methods
    yield paths, untouched
    untouched()


@pytest.mark.parametrize('payload', ['globals', 'builtins', 'swap'])
def test_crafted_checkpoints_are_refused_inside_the_scoped_load(crafted, payload):
    from dfl_mm import mmengine_checkpoint_loading
    paths, untouched = crafted
    with pytest.raises(pickle.UnpicklingError, match='refused'):
        with mmengine_checkpoint_loading():
            torch.load(paths[payload], weights_only=True)
    untouched()
    assert getattr not in torch.serialization.get_safe_globals()


def test_the_runners_own_errors_inside_the_scope_are_not_taken_for_a_pickles():
    """Only what torch's unpickler raises becomes 'malformed pickle': an error of the
    runner's own code keeps its type, whatever its function or file is called."""
    from dfl_mm import mmengine_checkpoint_loading

    class Hook:
        def __setstate__(self, state):
            raise KeyError('the runner\'s own')

        def find_class(self):
            raise TypeError('the runner\'s own')

    for call, kind in ((lambda: Hook().__setstate__({}), KeyError), (Hook().find_class, TypeError)):
        with pytest.raises(kind, match="runner's own"):
            with mmengine_checkpoint_loading():
                call()


def _det_tool_args(data_root):
    from testkit import ROOT
    config = str(ROOT / 'configs' / 'demo' / 'retinanet_r18_dfl_demo.py')
    small = ['train_dataloader.dataset.indices=4', 'val_dataloader.dataset.indices=2',
             'test_dataloader.dataset.indices=2', 'train_dataloader.batch_size=2',
             'train_cfg.max_epochs=1']
    return config, small


@pytest.mark.slow  # builds runners
@pytest.mark.parametrize('payload', ['globals', 'builtins'])
@pytest.mark.parametrize('route', ['test.py', '--resume', 'load_from'])
def test_crafted_checkpoints_are_refused_by_every_tool_route(crafted, payload, route, in_tmp,
                                                             shared_data):
    test_tool = tool('test')
    train_tool = tool('train')
    from testkit import link_data
    paths, untouched = crafted
    link_data(shared_data, in_tmp)
    config, small = _det_tool_args(in_tmp)
    work = ['--work-dir', str(in_tmp / 'work')]
    with pytest.raises(pickle.UnpicklingError, match='refused'):
        if route == 'test.py':
            test_tool.main([config, paths[payload], *work, '--cfg-options', *small])
        elif route == '--resume':
            train_tool.main([config, '--resume', paths[payload], *work, '--cfg-options',
                             *small])
        else:
            train_tool.main([config, *work, '--cfg-options', *small,
                             f'load_from={paths[payload]}'])
    untouched()


def test_a_real_mmengine_checkpoint_with_history_buffers_still_loads(tmp_path):
    from mmengine.runner.checkpoint import save_checkpoint

    from dfl_mm import mmengine_checkpoint_loading
    hub = MessageHub.get_instance('state_real_ckpt')
    for value in (0.5, 0.25, 1.0):
        hub.update_scalar('train/loss', value)
    path = str(tmp_path / 'real.pth')
    save_checkpoint({'message_hub': hub.state_dict()}, path)
    with mmengine_checkpoint_loading():
        loaded = torch.load(path, weights_only=True)
    restored = MessageHub.get_instance('state_real_ckpt_restored')
    restored.load_state_dict(loaded['message_hub'])
    buffer = restored.get_scalar('train/loss')
    assert buffer.mean() == pytest.approx(1.75 / 3) and buffer.max() == 1.0
