"""Quality-aware DFL: soft targets in the places of mmdet's QualityFocalLoss
(GFL, TOOD, RTMDet, LD) and VarifocalLoss (VFNet), side by side with mmdet's
own losses for what must agree, and probabilities (``activated``)."""
import json
from pathlib import Path

import pytest
import torch
from mmdet.models.losses import QualityFocalLoss, VarifocalLoss

from dfl_mm import DualFocalLoss
from dfl_mm.functional import dual_focal_loss

N, C = 40, 5
SOFT_GOLDEN = json.loads((Path(__file__).parent / 'data' / 'dfl_soft_golden.json').read_text())


def _quality_call(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(N, C, generator=g, dtype=dtype)
    labels = torch.randint(0, C + 1, (N, ), generator=g)  # C: background
    scores = torch.rand(N, generator=g, dtype=dtype)
    weight = torch.rand(N, generator=g, dtype=dtype)
    weight[:4] = 0
    return z, labels, scores, weight


def _dense(labels, scores):
    """The (N, C) map a (labels, scores) target means, built by hand."""
    y = torch.zeros(len(labels), C, dtype=scores.dtype)
    pos = labels < C
    y[pos.nonzero()[:, 0], labels[pos]] = scores[pos]
    return y


def independent(z, y, gamma):
    """``-ln(1 - |y - sigmoid(z)|^gamma)`` per element, straight from the definition."""
    return -torch.log(1 - (y - torch.sigmoid(z)).abs() ** gamma)


@pytest.mark.parametrize('case', SOFT_GOLDEN['cases'], ids=lambda c: f"C{len(c['logits'])}"
                         f"-g{c['gamma']}-z{max(map(abs, c['logits'])):.0f}")
def test_soft_target_golden_values_and_gradients(case):
    """60-digit references (tests/helpers/soft_golden.py): the loss per class, its sum
    and both gradients, in float64."""
    z = torch.tensor([case['logits']], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([case['target']], dtype=torch.float64)
    gamma = torch.tensor(case['gamma'], dtype=torch.float64, requires_grad=True)
    per_class = dual_focal_loss(z, y, gamma, reduction='none')
    torch.testing.assert_close(per_class[0], torch.tensor(case['loss_per_class'],
                                                          dtype=torch.float64), rtol=1e-9,
                               atol=1e-14)
    total = dual_focal_loss(z, y, gamma, reduction='sum')
    g_z, g_gamma = torch.autograd.grad(total, (z, gamma))
    torch.testing.assert_close(float(total), case['loss_sum'], rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(g_z[0], torch.tensor(case['grad_logits'], dtype=torch.float64),
                               rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(float(g_gamma), case['grad_gamma'], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize('gamma', [0.5, 1.0, 2.0, 4.5])
def test_soft_target_values_and_gradients_match_the_definition(gamma):
    z, labels, scores, _ = _quality_call(1, torch.float64)
    z = (z / 3).requires_grad_()  # moderate logits: the direct formula is exact there
    y = _dense(labels, scores)
    got = dual_focal_loss(z, y, gamma, reduction='none')
    want = independent(z, y, gamma)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    g_got, = torch.autograd.grad(got.sum(), z)
    g_want, = torch.autograd.grad(want.sum(), z)
    torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-10)
    fn = lambda x: DualFocalLoss(gamma=gamma)(x, (labels, scores))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z.detach().requires_grad_(), ))


def test_the_tuple_and_the_tensor_target_are_the_same_data():
    z, labels, scores, weight = _quality_call()
    loss = DualFocalLoss()
    dense = _dense(labels, scores)
    torch.testing.assert_close(loss(z, (labels, scores), weight, reduction_override='sum'),
                               loss(z, dense, weight, reduction_override='sum'))
    torch.testing.assert_close(loss(z, (labels, scores), weight, reduction_override='none'),
                               loss(z, dense, weight, reduction_override='none').sum(1))


@pytest.mark.parametrize('avg_factor', [None, 7.5])
def test_reductions_shapes_and_zero_weights_follow_mmdets_quality_focal_loss(avg_factor):
    z, labels, scores, weight = _quality_call(2)
    ours, theirs = DualFocalLoss(), QualityFocalLoss()
    per_row = {}
    for name, fn in (('ours', ours), ('theirs', theirs)):
        none = fn(z, (labels, scores), weight, reduction_override='none')
        total = fn(z, (labels, scores), weight, reduction_override='sum')
        mean = fn(z, (labels, scores), weight, avg_factor=avg_factor)
        assert none.shape == (N, )  # QualityFocalLoss's 'none' is per anchor
        torch.testing.assert_close(none.sum(), total)
        # 'mean': over the rows (QFL averages (N,) row losses), or / avg_factor
        torch.testing.assert_close(mean, total / (avg_factor or N))
        per_row[name] = none
    # the same rows weigh nothing
    assert torch.equal(per_row['ours'] == 0, per_row['theirs'] == 0)
    assert torch.equal(per_row['ours'][:4], torch.zeros(4))


def test_iou_weighted_follows_mmdets_varifocal_loss():
    z, labels, scores, _ = _quality_call(3)
    y = _dense(labels, scores)
    weight = torch.rand(N, C)
    weight[:, 0] = 0
    plain = DualFocalLoss(reduction='none')(z, y, weight)
    weighted = DualFocalLoss(reduction='none', iou_weighted=True)(z, y, weight)
    vfl = VarifocalLoss(reduction='none')(z, y, weight)
    assert weighted.shape == vfl.shape == (N, C)  # VarifocalLoss's 'none' is per element
    # a positive element weighs its IoU target, every other element 1
    torch.testing.assert_close(weighted, plain * torch.where(y > 0, y, 1.0))
    assert torch.equal(weighted == 0, vfl == 0)
    # avg_factor: sum / avg_factor, as VarifocalLoss's weight_reduce_loss
    torch.testing.assert_close(DualFocalLoss(iou_weighted=True)(z, y, weight, avg_factor=3.0),
                               weighted.sum() / 3.0)
    # per-row weights (N,) weigh every element of their row
    row = torch.rand(N)
    torch.testing.assert_close(
        DualFocalLoss(reduction='none', iou_weighted=True)(z, y, row),
        DualFocalLoss(reduction='none', iou_weighted=True)(z, y, row[:, None].expand(N, C)))


def test_activated_takes_probabilities_and_gives_the_logits_loss():
    z, labels, scores, _ = _quality_call(4, torch.float64)
    z = z / 3
    prob = torch.sigmoid(z).requires_grad_()
    logits = z.clone().requires_grad_()
    for target in (labels, (labels, scores)):
        got = DualFocalLoss(activated=True)(prob, target)
        want = DualFocalLoss()(logits, target)
        torch.testing.assert_close(got, want)
        g_p, = torch.autograd.grad(got, prob)
        g_z, = torch.autograd.grad(want, logits)
        # the chain rule through p = sigmoid(z): d/dp = d/dz / (p (1 - p))
        torch.testing.assert_close(g_p, g_z / (prob * (1 - prob)).detach())
    saturated = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    out = DualFocalLoss(activated=True)(saturated, torch.tensor([0, 2]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(saturated.grad).all()
    with pytest.raises(ValueError, match=r'activated=True takes probabilities in \[0, 1\]'):
        DualFocalLoss(activated=True)(torch.tensor([[0.5, 1.5]]), torch.tensor([0]))
    with pytest.raises(ValueError, match='activated=True takes sigmoid probabilities'):
        DualFocalLoss(activated=True, use_sigmoid=False)


def test_adaptive_weights_count_the_assigned_class_of_positive_rows():
    z, labels, scores, _ = _quality_call(5)
    want = torch.bincount(labels[labels < C], minlength=C).double()
    for target in ((labels, scores), _dense(labels, scores)):
        loss = DualFocalLoss(class_weight='adaptive', num_classes=C,
                             adaptive_weight=dict(momentum=0.0))
        loss(z, target)
        if isinstance(target, tuple):
            assert torch.equal(loss.adaptive.counts, want)  # a soft score is not a count
        else:  # a row with a positive score counts once, for its class
            dense_rows = target.amax(1) > 0
            torch.testing.assert_close(
                loss.adaptive.counts,
                torch.bincount(target.argmax(1)[dense_rows], minlength=C).double())
    # 'row' weights: the rows of a float target weigh their assigned class's weight
    loss = DualFocalLoss(class_weight='adaptive', num_classes=C,
                         adaptive_weight=dict(momentum=0.0))
    loss(z, (labels, scores))
    w = loss.adaptive.weights()
    assert not torch.equal(w, torch.ones(C))
    loss.eval()
    y = _dense(labels, scores)
    row_w = torch.where(labels < C, w[labels.clamp(max=C - 1)], 1.0)
    torch.testing.assert_close(loss(z, (labels, scores), reduction_override='none'),
                               DualFocalLoss(reduction='none')(z, y).sum(1) * row_w)


@pytest.mark.parametrize('dtype, p', [(torch.float16, 1e-4), (torch.float16, 0.9995),
                                      (torch.bfloat16, 0.005), (torch.bfloat16, 2e-6)])
def test_activated_half_probabilities_get_float32_loss_and_gradients(dtype, p):
    """Half probabilities are clamped at float32's eps, not their own (float16's 9.8e-4,
    bfloat16's 7.8e-3): the missed hard positive keeps its loss and gradient."""
    prob = torch.tensor([[p, 0.3, p]], dtype=dtype)
    labels = torch.tensor([0])
    half = prob.clone().requires_grad_()
    exact = prob.double().requires_grad_()  # the same values, in float64
    got, want = (DualFocalLoss(activated=True, reduction='sum')(x, labels)
                 for x in (half, exact))
    got.backward()
    want.backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(half.grad.double(), exact.grad,
                               rtol=2 ** -7 if dtype == torch.bfloat16 else 2 ** -10, atol=0)
    assert half.grad[0, 0] != 0


def test_adaptive_weights_place_a_zero_score_positive_by_its_label():
    """A positive whose quality score is 0 (an IoU of 0 early in training) is counted
    as its class and weighed as its class, not as background."""
    loss = DualFocalLoss(num_classes=3, class_weight='adaptive',
                         adaptive_weight=dict(momentum=0.0, power=1.0))
    loss.adaptive.counts.copy_(torch.tensor([8.0, 1.0, 1.0], dtype=torch.float64))
    w = loss.adaptive.weights()
    assert float(w[1]) > 1.5  # the rare class weighs more than 1
    z = torch.randn(4, 3)
    labels, scores = torch.tensor([1, 1, 0, 3]), torch.tensor([0.0, 0.7, 0.4, 0.0])
    got = loss(z, (labels, scores), reduction_override='none')
    plain = DualFocalLoss(reduction='none')(z, (labels, scores))
    torch.testing.assert_close(got, plain * torch.stack([w[1], w[1], w[0], torch.tensor(1.0)]))


@pytest.mark.parametrize('target, error, message', [
    (lambda: (torch.zeros(N, dtype=torch.long), ), TypeError, 'must be \\(labels, scores\\)'),
    (lambda: (torch.zeros(N), torch.rand(N)), TypeError, 'labels .* must be integers'),
    (lambda: (torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)), TypeError,
     'scores .* must be floats'),
    (lambda: (torch.full((N, ), C + 1), torch.rand(N)), ValueError, f'label {C + 1} out of'),
    (lambda: (torch.zeros(N - 1, dtype=torch.long), torch.rand(N)), ValueError,
     'N labels and N quality scores'),
    (lambda: (torch.zeros(N, dtype=torch.long), torch.full((N, ), 1.5)), ValueError,
     r'a float target must be in \[0, 1\]'),
    (lambda: (torch.zeros(N, dtype=torch.long), torch.rand(N, requires_grad=True)), ValueError,
     'target'),
])
def test_a_bad_quality_target_is_refused_naming_it(target, error, message):
    with pytest.raises(error, match=message):
        DualFocalLoss()(torch.randn(N, C), target())


@pytest.mark.parametrize('shape', [(N, ), ()])
def test_a_quality_target_with_a_1d_or_0d_prediction_is_refused_naming_it(shape):
    target = (torch.zeros(N, dtype=torch.long), torch.rand(N))
    with pytest.raises(ValueError, match=r'takes \(N, C\) scores .* got pred'):
        DualFocalLoss()(torch.randn(shape), target)
