"""State that no edge case, failing call or crafted file can corrupt.

The adaptive statistics, the learnable exponent and what a checkpoint
restores change only on a successful call, are the same on every rank, and
come back exactly on resume; settings come from the config. One test (or a
parametrised group) per way it could go wrong.
"""
import builtins
import math
import os
import pickle
import random
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.logging import MessageHub

from dfl_mm import DualFocalLoss, dual_focal_loss
from dfl_mm.models.adaptive import AdaptiveClassWeight, normalise_weights

from crafted_pickles import glob, text, write_checkpoint

GAMMA_LOGIT_LIMIT = 12.0  # dfl_mm.models.loss.GAMMA_LOGIT_LIMIT (asserted below)


def _adaptive(use_sigmoid=False, apply_to='row', basis='frequency', classes=3):
    return DualFocalLoss(use_sigmoid=use_sigmoid, class_weight='adaptive', num_classes=classes,
                         adaptive_weight=dict(apply_to=apply_to, basis=basis, power=1.0))


def _state(loss):
    """Everything the loss remembers: the state dict and the open step."""
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    if loss.adaptive is not None:
        state['pending'] = loss.adaptive.pending.clone()
        state['calls'] = loss.adaptive._calls.clone()
    return state


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], torch.Tensor):
            assert torch.equal(before[key], after[key]), key
        else:
            assert before[key] == after[key], key


# ------------------------------------------------ 1. nothing counted: weights 1
@pytest.mark.parametrize('apply_to', ['row', 'element'])
@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_a_step_with_nothing_counted_keeps_every_weight_at_1(use_sigmoid, apply_to):
    torch.manual_seed(0)
    loss = _adaptive(use_sigmoid, apply_to)
    if use_sigmoid:  # no positive anchor: all background
        logits, labels = torch.randn(40, 3), torch.full((40, ), 3)
        call = dict(avg_factor=1.0)
    else:  # every pixel ignored
        logits, labels = torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 255)
        call = dict(ignore_index=255)
    loss(logits, labels, **call)
    assert int(loss.adaptive.steps) == 1 and not loss.adaptive.counts.any()
    assert torch.equal(loss.adaptive.weights(), torch.ones(3))
    # the next step trains at the unweighted scale
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    plain = DualFocalLoss(use_sigmoid=use_sigmoid)
    if use_sigmoid:
        logits, labels = torch.randn(40, 3), torch.randint(0, 4, (40, ))
    torch.testing.assert_close(loss(logits, labels, **call), plain(logits, labels, **call))


@pytest.mark.parametrize('apply_to', ['row', 'element'])
def test_a_class_with_no_information_weighs_1(apply_to):
    raw = torch.tensor([1.0, 4.0, 100.0], dtype=torch.float64)
    freq = torch.tensor([0.8, 0.2, 0.0], dtype=torch.float64)
    weights = normalise_weights(raw, freq, apply_to, max_weight=10.0)
    assert weights[2] == 1.0
    share = freq if apply_to == 'row' else torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert float((share * weights).sum()) == pytest.approx(1.0)
    assert torch.equal(normalise_weights(raw, torch.zeros(3, dtype=torch.float64),
                                         apply_to, 10.0), torch.ones(3, dtype=torch.float64))
    # recall basis: a class never counted has no recall
    loss = _adaptive(basis='recall', apply_to=apply_to)
    loss(torch.randn(1, 3, 2, 5), torch.tensor([[0, 0, 0, 1, 1], [0, 1, 0, 1, 0]])[None])
    assert loss.adaptive.weights()[2] == 1.0


# ------------------------------------------------ 2. a raising call changes nothing
def _valid_or_invalid_call(rng, use_sigmoid):
    """A random call: (pred, target, kwargs, is_valid)."""
    classes = 3
    bad = rng.random() < 0.5
    if use_sigmoid:
        pred, target = torch.randn(12, classes), torch.randint(0, classes + 1, (12, ))
        kwargs = dict(avg_factor=4.0)
    else:
        pred, target = torch.randn(2, classes, 3, 4), torch.randint(0, classes, (2, 3, 4))
        kwargs = dict(ignore_index=255)
    if not bad:
        return pred, target, kwargs, True
    kind = rng.choice(['label_high', 'label_low', 'shape', 'weight_shape', 'weight_negative',
                       'avg_factor', 'nan_weight', 'dtype'])
    if kind == 'label_high':
        target.view(-1)[rng.randrange(target.numel())] = classes + 5
    elif kind == 'label_low':
        target.view(-1)[0] = -3
    elif kind == 'shape':
        target = target[:1]
    elif kind == 'weight_shape':
        kwargs['weight'] = torch.ones(5)
    elif kind == 'weight_negative':
        kwargs['weight'] = -torch.ones(target.shape)
    elif kind == 'nan_weight':
        kwargs['weight'] = torch.full(target.shape, math.nan)
    elif kind == 'avg_factor':
        kwargs['avg_factor'] = -1.0
        kwargs.pop('ignore_index', None)
    else:
        target = target.to(torch.uint8)
        kwargs['ignore_index'] = -1
    return pred, target, kwargs, False


@pytest.mark.parametrize('use_sigmoid', [False, True])
@pytest.mark.parametrize('learnable', [False, 'scalar'])
@pytest.mark.parametrize('in_runner', [False, True])
def test_random_calls_a_raising_call_leaves_the_state_dict_as_it_was(use_sigmoid, learnable,
                                                                     in_runner):
    """Property: for random valid and invalid calls, a call that raises leaves
    every buffer, parameter and open count as it found them (inside a hook's
    steps too, two calls each)."""
    rng = random.Random(7)
    loss = DualFocalLoss(use_sigmoid=use_sigmoid, class_weight='adaptive', num_classes=3,
                         learnable_gamma=learnable, adaptive_weight=dict(basis='recall'))
    raised = 0
    stepped = [m for m in loss.modules() if hasattr(m, 'begin_step')]
    try:
        for it in range(60):
            if in_runner and it % 2 == 0:  # what DFLGammaHook does around an iteration
                for module in stepped:
                    module.end_step()
                    module.begin_step()
            pred, target, kwargs, valid = _valid_or_invalid_call(rng, use_sigmoid)
            before = _state(loss)
            try:
                out = loss(pred, target, **kwargs)
            except (ValueError, TypeError):
                assert not valid
                raised += 1
                _assert_same_state(before, _state(loss))
                continue
            assert valid and torch.isfinite(out)
    finally:
        for module in stepped:
            module.end_step()
    assert raised > 15 and int(loss.adaptive.steps) > 10


def test_labels_out_of_range_are_refused_before_anything_is_counted():
    loss = _adaptive()
    labels = torch.tensor([0, 1, 7, 2]).view(1, 1, 4)
    with pytest.raises(ValueError, match='label 7 out of range'):
        loss(torch.randn(1, 3, 1, 4), labels, ignore_index=255)
    assert int(loss.adaptive.steps) == 0 and not loss.adaptive.pending.any()


# ------------------------------------------------ 3. crafted checkpoints
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


def _det_tool_args(data_root):
    from conftest import ROOT
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
    import test as test_tool
    import train as train_tool
    from conftest import link_data
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


# ------------------------------------------------ 4. load_from: settings from the config
def _ckpt(**settings):
    return {k: v.clone() for k, v in DualFocalLoss(**settings).state_dict().items()}


def test_load_from_keeps_the_configs_fixed_gamma():
    loss = DualFocalLoss(gamma=0.5)
    with pytest.warns(UserWarning, match='config fixes gamma=0.5'):
        loss.load_state_dict(_ckpt(gamma=2.0))
    assert float(loss.gamma) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # same settings (--resume): silent
        loss.load_state_dict(_ckpt(gamma=0.5))


def test_load_from_keeps_the_learned_gamma_as_a_value_in_the_configs_bounds():
    trained = DualFocalLoss(learnable_gamma='scalar', gamma=2.0, gamma_min=0.5, gamma_max=10.0)
    with torch.no_grad():
        trained.gamma_logit.fill_(math.log((3.0 - 0.5) / (10.0 - 3.0)))
    state = trained.state_dict()
    # other bounds, another initial value and pull: the value 3.0 stays 3.0
    loss = DualFocalLoss(learnable_gamma='scalar', gamma=1.5, gamma_min=1.0, gamma_max=5.0,
                         gamma_reg=0.1)
    loss.load_state_dict(state)
    assert float(loss.gamma) == pytest.approx(3.0, abs=1e-5)
    assert float(loss.exponent.gamma_init) == 1.5 and loss.exponent.reg == 0.1
    assert loss.exponent.gamma_range.tolist() == [1.0, 5.0]
    # outside the config's bounds: clipped into them, with one warning
    narrow = DualFocalLoss(learnable_gamma='scalar', gamma=1.0, gamma_min=0.5, gamma_max=2.0)
    with pytest.warns(UserWarning, match='outside the config'):
        narrow.load_state_dict(state)
    assert 1.999 < float(narrow.gamma) < 2.0
    # the same settings (--resume): bit for bit
    same = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    same.load_state_dict(state)
    assert torch.equal(same.gamma_logit, trained.gamma_logit)


def test_old_checkpoints_without_gamma_range_still_load_exactly():
    trained = DualFocalLoss(learnable_gamma='per_class', num_classes=3, gamma=2.0)
    with torch.no_grad():
        trained.gamma_logit.add_(torch.tensor([0.3, -0.2, 0.1]))
    # as saved before gamma_range and the exponent submodule existed
    old = {k.replace('exponent.', ''): v for k, v in trained.state_dict().items()
           if k != 'exponent.gamma_range'}
    fresh = DualFocalLoss(learnable_gamma='per_class', num_classes=3, gamma=2.0)
    result = fresh.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.gamma_logit, trained.gamma_logit)


def test_load_from_across_fixed_and_learnable_gamma_takes_the_config():
    learnable = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    result = learnable.load_state_dict(_ckpt(gamma=4.0), strict=True)
    assert not result.missing_keys and float(learnable.gamma) == pytest.approx(2.0)
    fixed = DualFocalLoss(gamma=1.0)
    with pytest.warns(UserWarning, match='learned gamma is not loaded'):
        result = fixed.load_state_dict(_ckpt(learnable_gamma='scalar', gamma=3.0), strict=True)
    assert not result.unexpected_keys and float(fixed.gamma) == 1.0


def test_load_from_through_mmengine_keeps_adaptive_statistics_and_config_settings(tmp_path):
    from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint
    source = DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=3,
                           gamma=2.0)
    source(torch.randn(1, 3, 2, 2), torch.tensor([[[0, 1], [1, 1]]]))
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint({'state_dict': source.state_dict()}, path)
    target = DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=3,
                           gamma=0.5, adaptive_weight=dict(power=1.0))
    with pytest.warns(UserWarning, match='config fixes gamma=0.5'):
        load_checkpoint(target, path, strict=True)
    assert float(target.gamma) == 0.5 and target.adaptive.power == 1.0
    assert torch.equal(target.adaptive.counts, source.adaptive.counts)


# ------------------------------------------------ 5. DDP broadcast_buffers
class _Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)
        self.loss = DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=4,
                                  adaptive_weight=dict(momentum=0.5))

    def forward(self, x, labels):
        return self.loss(self.conv(x), labels)


def _ddp_rank(rank, port, broadcast_buffers, hook, out):
    from torch.nn.parallel import DistributedDataParallel
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(_Head(), broadcast_buffers=broadcast_buffers)
    labels = torch.full((1, 2, 2), 0 if rank == 0 else 3)  # rank 0: class 0, rank 1: class 3
    for it in range(3):
        if hook:  # what DFLGammaHook.before_train_iter does
            model.module.loss.adaptive.begin_step()
        model(torch.randn(1, 4, 2, 2), labels).backward()
        if hook:  # what DFLGammaHook.after_train_iter does
            model.module.loss.adaptive.end_step()
    model.module.loss.adaptive.end_step()
    out[rank] = model.module.loss.adaptive.counts.tolist()
    dist.destroy_process_group()


@pytest.mark.slow  # DDP
@pytest.mark.parametrize('hook', [False, True])
@pytest.mark.parametrize('broadcast_buffers', [True, False])
def test_ddp_keeps_every_ranks_counts_whatever_broadcast_buffers(broadcast_buffers, hook):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_rank, args=(port, broadcast_buffers, hook, out), nprocs=2, join=True)
    assert out[0] == out[1]
    # three steps of 4 pixels of each class, EMA 0.5: 4 * (1 - 0.5 ** 3) = 3.5
    assert out[0] == pytest.approx([3.5, 0.0, 0.0, 3.5])


def test_the_open_step_is_not_a_buffer():
    module = AdaptiveClassWeight(3)
    assert 'pending' not in dict(module.named_buffers())
    module.observe(torch.tensor([0, 1]))  # outside a runner: folded at once
    assert not module.pending.any() and int(module.steps) == 1


# ------------------------------------------------ 6. half precision
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_a_float32_loss(dtype):
    torch.manual_seed(0)
    logits = (4 * torch.randn(2000, 80)).to(dtype).requires_grad_()
    labels = torch.randint(0, 81, (2000, ))
    out = dual_focal_loss(logits, labels, reduction='sum')
    assert out.dtype == torch.float32 and torch.isfinite(out) and float(out) > 65504
    reference = dual_focal_loss(logits.detach().float(), labels, reduction='sum')
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=0)
    out.backward()
    assert logits.grad.dtype == dtype
    module = DualFocalLoss()
    assert module(logits, labels).dtype == torch.float32


# ------------------------------------------------ 7. one label rule on every backend
@pytest.mark.parametrize('dtype, ignore_index', [(torch.uint8, -1), (torch.int8, 255),
                                                 (torch.int16, 40000)])
def test_an_ignore_index_the_label_dtype_cannot_hold_is_refused(dtype, ignore_index):
    logits, labels = torch.randn(4, 3, 5), torch.randint(0, 3, (4, 5)).to(dtype)
    with pytest.raises(ValueError, match=f'ignore_index={ignore_index} cannot occur in'):
        dual_focal_loss(logits, labels, use_sigmoid=False, ignore_index=ignore_index)
    with pytest.raises(ValueError, match='cannot occur in'):
        DualFocalLoss(use_sigmoid=False)(logits[..., None], labels[..., None],
                                         ignore_index=ignore_index)


def test_uint8_labels_give_the_int64_result_on_every_backend(backend):
    torch.manual_seed(1)
    logits, labels = torch.randn(2, 19, 8, 8), torch.randint(0, 19, (2, 8, 8))
    labels[0, :3] = 255
    want = dual_focal_loss(logits, labels, use_sigmoid=False, ignore_index=255)
    got = dual_focal_loss(logits, labels.to(torch.uint8), use_sigmoid=False, ignore_index=255)
    torch.testing.assert_close(got, want)


# ------------------------------------------------ 8. second derivatives
@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_double_backward_on_the_default_path_matches_the_core(use_sigmoid):
    from dfl_mm import ops
    torch.manual_seed(2)
    shape = (64, 5) if use_sigmoid else (2, 5, 4, 4)
    z0 = 2 * torch.randn(shape)
    labels = (torch.randint(0, 6, (64, )) if use_sigmoid
              else torch.randint(0, 5, (2, 4, 4)))
    vector = torch.randn(shape)

    def hvp(backend):
        z = z0.clone().requires_grad_()
        gamma = torch.tensor(1.7, requires_grad=True)
        with ops.use(backend):
            out = dual_focal_loss(z, labels, gamma, use_sigmoid=use_sigmoid)
            gz, = torch.autograd.grad(out, z, create_graph=True)
            return torch.autograd.grad((gz * vector).sum(), (z, gamma))

    got, want = hvp('cpu'), hvp('reference')
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert got[0].abs().sum() > 0


def test_double_backward_is_exact_in_float64():
    torch.manual_seed(3)
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    gamma = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (6, ))
    assert torch.autograd.gradgradcheck(lambda a, g: dual_focal_loss(a, labels, g), (z, gamma))


# ------------------------------------------------ 9. scalar checks
@pytest.mark.parametrize('settings, error, match', [
    (dict(ignore_index=True), TypeError, 'ignore_index must be an int or None'),
    (dict(ignore_index='255'), TypeError, 'ignore_index must be an int or None'),
    (dict(loss_weight=math.inf), ValueError, 'loss_weight must be a finite number'),
    (dict(class_weight='Adaptive'), ValueError, "class_weight must be 'adaptive', a list"),
    (dict(class_weight='missing.npy'), ValueError, "file 'missing.npy' does not exist"),
    (dict(avg_non_ignore='yes'), TypeError, 'avg_non_ignore must be True or False'),
])
def test_bad_settings_are_refused_at_construction(settings, error, match):
    with pytest.raises(error, match=match):
        DualFocalLoss(**settings)


@pytest.mark.parametrize('call, error, match', [
    (dict(avg_factor=-1.0), ValueError, 'avg_factor must be a finite number >= 0, got -1.0'),
    (dict(avg_factor=math.inf), ValueError, 'avg_factor must be a finite number >= 0'),
    (dict(avg_factor='4'), TypeError, 'avg_factor must be a number or a tensor'),
    (dict(avg_factor=torch.tensor(-2.0)), ValueError, 'avg_factor must be a finite number'),
    (dict(weight=-torch.ones(8)), ValueError, 'weight must be non-negative finite numbers'),
    (dict(weight=-torch.ones(8, 3)), ValueError, 'weight must be non-negative finite'),
    (dict(weight=torch.ones(5)), ValueError, r'weight must have shape \(8,\)'),
    (dict(ignore_index=1.0), TypeError, 'ignore_index must be an int or None'),
])
@pytest.mark.parametrize('adaptive', [False, True])
def test_bad_call_values_get_one_clear_error(call, error, match, adaptive):
    loss = (DualFocalLoss(class_weight='adaptive', num_classes=3) if adaptive
            else DualFocalLoss())
    with pytest.raises(error, match=match):
        loss(torch.randn(8, 3), torch.randint(0, 4, (8, )), **call)


# ------------------------------------------------ 10. integer one-hot maps
def test_integer_one_hot_maps_give_the_labels_loss():
    torch.manual_seed(4)
    logits, labels = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
    one_hot = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2)
    for use_sigmoid in (True, False):
        loss = DualFocalLoss(use_sigmoid=use_sigmoid)
        torch.testing.assert_close(loss(logits, one_hot), loss(logits, labels.clone())
                                   if not use_sigmoid else loss(logits, one_hot.float()))
    torch.testing.assert_close(
        dual_focal_loss(logits, one_hot, use_sigmoid=False),
        dual_focal_loss(logits, labels, use_sigmoid=False))
    # mmdet-style (N, C) scores and the sigmoid labels' one-hot rows (background: all 0)
    scores, det_labels = torch.randn(10, 4), torch.randint(0, 5, (10, ))
    rows = torch.nn.functional.one_hot(det_labels, 5)[:, :4]
    torch.testing.assert_close(dual_focal_loss(scores, rows), dual_focal_loss(scores, det_labels))
    with pytest.raises(ValueError, match='one-hot map'):
        dual_focal_loss(logits, one_hot * 2, use_sigmoid=False)


# ------------------------------------------------ 11. saturated learnable gamma
def test_a_gamma_driven_to_its_bound_stays_recoverable():
    torch.manual_seed(5)
    loss = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1e12)
    scores, labels = 3 * torch.randn(200, 4), torch.randint(0, 5, (200, ))
    optimizer.zero_grad()
    loss(scores, labels).backward()
    optimizer.step()  # the logit is now ~1e11: far past the bound
    assert abs(float(loss.gamma_logit)) > 1e6
    loss(scores, labels).backward()  # the call counts it at the limit and projects it
    assert abs(float(loss.gamma_logit)) == GAMMA_LOGIT_LIMIT
    # only the pull now: its gradient is nonzero, and a step moves gamma off the bound
    bound = float(loss.gamma)
    optimizer = torch.optim.SGD(loss.parameters(), lr=1e6)
    optimizer.zero_grad()
    loss.gamma_pull().backward()
    assert loss.gamma_logit.grad.abs() > 0
    optimizer.step()
    loss(scores, labels)
    assert abs(float(loss.gamma) - 2.0) < abs(bound - 2.0) - 0.5


def test_a_raising_call_undoes_its_projection_and_a_step_projects_once():
    """The projection happens at a step's first training call, before the logit
    enters the graph; a call that raises leaves the pushed logit as it was; inside
    a runner the later calls of the step (FPN levels) do not write the logit, so a
    graph that saved it (torch.compile) still finds it unchanged at backward."""
    loss = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    scores, labels = torch.randn(20, 4), torch.randint(0, 5, (20, ))
    with torch.no_grad():
        loss.gamma_logit.fill_(1e9)
    with pytest.raises(ValueError, match='out of range'):
        loss(scores, torch.full((20, ), 7))  # out of range: raises in the core
    assert float(loss.gamma_logit) == 1e9
    loss.exponent.begin_step()  # DFLGammaHook.before_train_iter
    loss(scores, labels)
    assert float(loss.gamma_logit) == GAMMA_LOGIT_LIMIT
    with torch.no_grad():
        loss.gamma_logit.fill_(1e9)  # as if pushed again within the step
    version = loss.gamma_logit._version
    loss(scores, labels)
    assert float(loss.gamma_logit) == 1e9 and loss.gamma_logit._version == version
    loss.exponent.end_step()
    loss.exponent.begin_step()  # the next step's first call projects
    loss(scores, labels)
    assert float(loss.gamma_logit) == GAMMA_LOGIT_LIMIT


def test_a_learnable_gamma_must_start_inside_the_recoverable_range():
    with pytest.raises(ValueError, match='farther from its bounds'):
        DualFocalLoss(learnable_gamma='scalar', gamma=9.99999, gamma_min=0.5, gamma_max=10.0)


def test_the_logit_limit_is_the_modules():
    from dfl_mm.models import loss
    assert loss.GAMMA_LOGIT_LIMIT == GAMMA_LOGIT_LIMIT


def test_checkpoints_from_before_the_exponent_submodule_load_bit_for_bit():
    """State dicts whose keys were 'gamma_logit' / 'fixed_gamma' (no 'exponent.')."""
    trained = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    with torch.no_grad():
        trained.gamma_logit.add_(0.37)
    old = {'gamma_logit': trained.gamma_logit.detach().clone(),
           'gamma_init': torch.tensor(2.0)}
    fresh = DualFocalLoss(learnable_gamma='scalar', gamma=2.0)
    result = fresh.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.gamma_logit, trained.gamma_logit)
    fixed = DualFocalLoss(gamma=3.0)
    assert not fixed.load_state_dict({'fixed_gamma': torch.tensor(3.0)}).unexpected_keys
