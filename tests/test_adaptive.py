"""Adaptive class weights: statistics, weights, steps, DDP, checkpoints, backends."""
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dfl_mm import DualFocalLoss, dual_focal_loss
from dfl_mm.models.adaptive import ADAPTIVE_DEFAULTS, AdaptiveClassWeight, normalise_weights

from testkit import adaptive_loss


def _seg_loss(**settings):
    return DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=3,
                         adaptive_weight=settings or None)


def _labels(*counts, ignored=0):
    """(1, n) labels with counts[c] pixels of class c and `ignored` of 255."""
    values = [c for c, n in enumerate(counts) for _ in range(n)] + [255] * ignored
    return torch.tensor(values).view(1, 1, -1)


def _step(loss, labels):
    logits = torch.randn(1, loss.adaptive.num_classes, *labels.shape[1:])
    return loss(logits, labels, ignore_index=255)


def test_known_label_stream_gives_expected_frequencies_and_weights():
    loss = _seg_loss(momentum=0.5, power=1.0, max_weight=100.0, eps=1e-4)
    # before any step every weight is 1
    assert torch.equal(loss.adaptive.weights(), torch.ones(3))
    _step(loss, _labels(6, 3, 1, ignored=5))  # ignored pixels are not counted
    _step(loss, _labels(2, 1, 1))
    # counts EMA: 0.5 * (0.5 * [6, 3, 1]) + 0.5 * [2, 1, 1] = [2.5, 1.25, 0.75]
    torch.testing.assert_close(loss.adaptive.counts,
                               torch.tensor([2.5, 1.25, 0.75], dtype=torch.float64))
    freq = torch.tensor([2.5, 1.25, 0.75], dtype=torch.float64) / 4.5
    torch.testing.assert_close(loss.adaptive.frequency(), freq)
    raw = (freq + 1e-4) ** -1.0
    expected = (raw / (freq * raw).sum()).float()  # the average pixel weighs 1
    torch.testing.assert_close(loss.adaptive.weights(), expected)
    assert float((loss.adaptive.frequency() * loss.adaptive.weights().double()).sum()) \
        == pytest.approx(1.0, rel=1e-6)
    assert int(loss.adaptive.steps) == 2


def test_a_class_absent_for_a_long_time_stays_seen_at_the_cap():
    """After ~70k steps without it (momentum 0.99) a class's count decays to a
    float64 denormal whose share of a large total is 0: it would weigh 1, as an unseen
    class. A seen class's count stays at float64's least normal, so it keeps the
    rare class's weight (the cap)."""
    loss = _seg_loss(momentum=0.99, power=1.0, max_weight=10.0)
    _step(loss, _labels(6, 3, 1))
    loss.adaptive.counts.copy_(torch.tensor([1e6, 1e5, 1e-322], dtype=torch.float64))
    _step(loss, _labels(6, 3, 0))
    assert loss.adaptive.frequency()[2] > 0
    assert float(loss.adaptive.weights()[2]) == pytest.approx(10.0)


def test_unseen_class_weighs_1_and_element_mode_normalises_over_classes():
    loss = _seg_loss(power=1.0, max_weight=4.0, apply_to='element')
    _step(loss, _labels(8, 2, 0))  # class 2 never seen
    weights = loss.adaptive.weights()
    assert weights[2] == 1.0  # no information: the average, not 1 / eps
    raw = torch.tensor([0.8, 0.2], dtype=torch.float64) ** -1.0
    torch.testing.assert_close(weights[:2], (raw / raw.mean()).clamp(0.25, 4).float(),
                               rtol=1e-3, atol=0)
    assert weights.min() >= 0.25


def test_recall_basis_weighs_missed_classes_more():
    loss = _seg_loss(basis='recall', power=1.0)
    logits = torch.full((1, 3, 1, 6), -5.0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2]).view(1, 1, 6)
    logits[0, 0, 0, :5] = 5.0  # predicts class 0 on the first five pixels
    loss(logits, labels)
    torch.testing.assert_close(loss.adaptive.recall(),
                               torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    weights = loss.adaptive.weights()
    assert weights[1] == weights[2] > 1 > weights[0]


def test_eval_does_not_update_and_weights_are_not_trained():
    loss = DualFocalLoss(learnable_gamma='scalar', class_weight='adaptive', num_classes=3)
    loss.eval()
    scores = torch.randn(20, 3, requires_grad=True)
    loss(scores, torch.randint(0, 4, (20, )), avg_factor=4.0).backward()
    assert int(loss.adaptive.steps) == 0 and not loss.adaptive.counts.any()
    assert [name for name, _ in loss.named_parameters()] == ['exponent.gamma_logit']
    assert {'adaptive.counts', 'adaptive.hits', 'adaptive.steps'} <= set(loss.state_dict())
    loss.train()
    loss(scores, torch.randint(0, 4, (20, )), avg_factor=4.0).backward()
    assert int(loss.adaptive.steps) == 1
    assert not loss.adaptive.weights().requires_grad


def test_mmdet_counts_positives_and_weighs_rows_by_their_class():
    """Sigmoid: background (label C) is not a class; a positive row weighs w[label]."""
    loss = DualFocalLoss(class_weight='adaptive', num_classes=2,
                         adaptive_weight=dict(momentum=0.0, power=1.0))
    scores = torch.randn(8, 2, requires_grad=True)
    loss(scores, torch.tensor([0, 0, 0, 1, 2, 2, 2, 2]), avg_factor=4.0)
    torch.testing.assert_close(loss.adaptive.frequency(),
                               torch.tensor([0.75, 0.25], dtype=torch.float64))
    weights = loss.adaptive.weights()
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 2, 2])
    label_weights = torch.rand(8)
    row = torch.tensor([weights[0], weights[1], 1, 1, weights[1], weights[0], 1, 1])
    expected = dual_focal_loss(scores, labels, weight=label_weights * row, avg_factor=4.0)
    torch.testing.assert_close(loss(scores, labels, label_weights, avg_factor=4.0), expected)


def test_calls_of_one_hook_step_are_one_step():
    """A RetinaNet head calls its loss once per FPN level: one update per iteration
    (DFLStepHook's begin_step / end_step around each); without a step, one per call."""
    loss = DualFocalLoss(class_weight='adaptive', num_classes=2,
                         adaptive_weight=dict(momentum=0.0))
    seen = []
    for it in range(3):
        loss.adaptive.begin_step()  # what DFLStepHook.before_train_iter does
        for level in range(5):
            labels = torch.tensor([0] * (level + 1) + [1, 2])
            loss(torch.randn(len(labels), 2), labels, avg_factor=2.0)
            seen.append(loss.adaptive.weights().clone())
        assert int(loss.adaptive.steps) == it  # not folded inside the step
        loss.adaptive.end_step()  # what DFLStepHook.after_train_iter does
        assert int(loss.adaptive.steps) == it + 1
    for it in range(3):  # the five levels of an iteration use the same weights
        assert all(torch.equal(w, seen[5 * it]) for w in seen[5 * it:5 * it + 5])
    # the five calls of the last iteration counted together: 15 of class 0, 5 of class 1
    torch.testing.assert_close(loss.adaptive.frequency(),
                               torch.tensor([0.75, 0.25], dtype=torch.float64))
    loss.adaptive.end_step()  # a step with no call is no step
    assert int(loss.adaptive.steps) == 3
    loss(torch.randn(3, 2), torch.tensor([0, 1, 2]), avg_factor=2.0)  # no step open
    assert int(loss.adaptive.steps) == 4


@pytest.mark.parametrize('settings, match', [
    (dict(power=-1.0), 'power'), (dict(momentum=1.0), 'momentum'),
    (dict(momentum=-0.1), 'momentum'), (dict(max_weight=0.5), 'max_weight'),
    (dict(eps=0.0), 'eps'), (dict(basis='inverse'), 'basis'),
    (dict(apply_to='pixel'), 'apply_to'), (dict(powr=1.0), 'unknown keys'),
    (dict(power=float('nan')), 'power')])
def test_bad_settings_name_the_option(settings, match):
    with pytest.raises(ValueError, match=match):
        DualFocalLoss(class_weight='adaptive', num_classes=3, adaptive_weight=settings)


def test_adaptive_needs_num_classes_and_matching_channels():
    with pytest.raises(ValueError, match='needs num_classes'):
        DualFocalLoss(class_weight='adaptive')
    with pytest.raises(ValueError, match="only used with class_weight='adaptive'"):
        DualFocalLoss(class_weight=[1.0, 2.0], adaptive_weight=dict(power=1.0))
    with pytest.raises(TypeError, match='power'):
        DualFocalLoss(class_weight='adaptive', num_classes=2, adaptive_weight=dict(power='1'))
    loss = DualFocalLoss(class_weight='adaptive', num_classes=2)
    # (a float target counts its rows' assigned classes: tests/test_quality.py)
    with pytest.raises(ValueError, match='num_classes=2'):
        loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_state_dict_round_trip_is_exact():
    loss = _seg_loss(basis='recall')
    for _ in range(3):
        _step(loss, torch.randint(0, 3, (1, 4, 5)))
    fresh = _seg_loss(basis='recall')
    fresh.load_state_dict(loss.state_dict())
    for name in ('counts', 'hits', 'steps'):
        assert torch.equal(getattr(fresh.adaptive, name), getattr(loss.adaptive, name))
    assert torch.equal(fresh.adaptive.weights(), loss.adaptive.weights())


def _adapted(apply_to):
    loss = _seg_loss(power=1.0, apply_to=apply_to)
    _step(loss, _labels(30, 6, 2))
    return loss


@pytest.mark.parametrize('apply_to', ['row', 'element'])
def test_backends_agree_with_adaptive_weights(backend, switch, apply_to):
    """The weights reach every backend: each equals the reference with explicit weights."""
    loss = _adapted(apply_to).eval()
    weights = loss.adaptive.weights()
    torch.manual_seed(0)
    z = (3 * torch.randn(2, 3, 5, 6)).requires_grad_()
    labels = torch.randint(0, 3, (2, 5, 6))
    labels[0, 0] = 255
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # triton interpreter: masked lanes
        out = loss(z, labels, ignore_index=255)
        out.backward()
    switch('reference')
    z_ref = z.detach().clone().requires_grad_()
    valid = labels != 255
    if apply_to == 'row':
        row = torch.where(valid, weights[labels.clamp(max=2)], 1.0)
        ref = dual_focal_loss(z_ref, labels, use_sigmoid=False, weight=row, ignore_index=255,
                              avg_factor=labels.numel())
    else:
        ref = dual_focal_loss(z_ref, labels, use_sigmoid=False, class_weight=weights,
                              ignore_index=255, avg_factor=labels.numel())
    ref.backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-4, atol=1e-6)
    # and the weights did change the loss
    plain = dual_focal_loss(z_ref.detach(), labels, use_sigmoid=False, ignore_index=255,
                            avg_factor=labels.numel())
    assert not torch.allclose(plain, ref)


def _rank_main(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    loss = _seg_loss(momentum=0.5)
    # rank 0 sees mostly class 0, rank 1 mostly class 2
    counts = [(9, 1, 0), (0, 2, 8)][rank]
    for _ in range(3):
        _step(loss, _labels(*counts))
    out[rank] = loss.adaptive.weights().tolist() + loss.adaptive.counts.tolist()
    dist.destroy_process_group()


@pytest.mark.slow  # DDP
def test_two_gloo_ranks_with_different_labels_end_with_identical_weights():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank_main, args=(port, out), nprocs=2, join=True)
    assert out[0] == out[1]
    # the all-reduced counts: (9, 3, 8) per step
    counts = torch.tensor(out[0][3:], dtype=torch.float64)
    torch.testing.assert_close(counts / counts.sum(), torch.tensor([0.45, 0.15, 0.40],
                                                                   dtype=torch.float64))


def test_defaults_are_documented_in_the_loss_docstring():
    assert set(ADAPTIVE_DEFAULTS) == {'basis', 'power', 'momentum', 'max_weight', 'apply_to',
                                      'eps', 'effective_beta', 'normalise', 'gamma_scale'}
    from dfl_mm import DualFocalLoss
    for key in ADAPTIVE_DEFAULTS:
        assert key in DualFocalLoss.__doc__
    module = AdaptiveClassWeight(3)
    assert (module.power, module.momentum) == (ADAPTIVE_DEFAULTS['power'],
                                               ADAPTIVE_DEFAULTS['momentum'])


def test_effective_number_weights_follow_cui_et_al():
    """basis='effective': w_c ∝ (1 - beta) / (1 - beta^N_c), N_c the class's
    targets in the average's window (counts / (1 - momentum)), normalised per row."""
    module = AdaptiveClassWeight(3, basis='effective', power=1.0, momentum=0.5, effective_beta=0.99,
                                 max_weight=100.0)
    module.observe(torch.tensor([0] * 60 + [1] * 30 + [2] * 10))
    window = torch.tensor([60.0, 30.0, 10.0], dtype=torch.float64)  # counts 30/15/5 over 0.5
    raw = (1 - 0.99) / (1 - 0.99 ** window)
    freq = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    torch.testing.assert_close(module.weights(), (raw / (freq * raw).sum()).float())
    assert module.weights()[2] > module.weights()[1] > module.weights()[0]


def test_effective_number_weights_flatten_when_every_class_is_plentiful():
    """Cui et al.'s property: once N_c >> 1 / (1 - beta) for every class, the
    effective numbers saturate and the weights tend to 1 (unlike 1 / frequency)."""
    module = AdaptiveClassWeight(2, basis='effective', power=1.0, momentum=0.0, effective_beta=0.9)
    module.observe(torch.tensor([0] * 5000 + [1] * 500))
    torch.testing.assert_close(module.weights(), torch.ones(2), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match='beta must be a number in'):
        AdaptiveClassWeight(2, basis='effective', effective_beta=1.0)


# ------------------------------------------------ nothing counted: weights 1
@pytest.mark.parametrize('apply_to', ['row', 'element'])
@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_a_step_with_nothing_counted_keeps_every_weight_at_1(use_sigmoid, apply_to):
    torch.manual_seed(0)
    loss = adaptive_loss(use_sigmoid, apply_to)
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
    loss = adaptive_loss(basis='recall', apply_to=apply_to)
    loss(torch.randn(1, 3, 2, 5), torch.tensor([[0, 0, 0, 1, 1], [0, 1, 0, 1, 0]])[None])
    assert loss.adaptive.weights()[2] == 1.0


# ------------------------------------------------ DDP broadcast_buffers
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
        if hook:  # what DFLStepHook.before_train_iter does
            model.module.loss.adaptive.begin_step()
        model(torch.randn(1, 4, 2, 2), labels).backward()
        if hook:  # what DFLStepHook.after_train_iter does
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
