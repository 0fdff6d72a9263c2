"""Issue 27's adaptive settings: head-normalised weights, positive-only weights and
per-class exponents from the running frequencies, each against an independent formula."""
import pytest
import torch

from dfl_mm import DualFocalLoss, dual_focal_loss
from dfl_mm.models.adaptive import AdaptiveClassWeight, normalise_weights


def _det_loss(**settings):
    return DualFocalLoss(use_sigmoid=True, gamma=2.0, class_weight='adaptive', num_classes=3,
                         adaptive_weight=dict(momentum=0.0, **settings))


def _fold(loss, labels):
    """One training call on ``labels`` (mmdet's (N,), 3 = background): a step."""
    loss.train()
    loss(torch.randn(len(labels), 3, requires_grad=True), torch.tensor(labels))


def _elements64(logits, labels, gamma):
    """-ln(1 - |y - p|^gamma) per element, float64, one-hot y (background: all 0)."""
    z = logits.double()
    y = torch.nn.functional.one_hot(labels, z.shape[1] + 1)[:, :z.shape[1]].double()
    return -torch.log1p(-(y - torch.sigmoid(z)).abs() ** torch.as_tensor(gamma).double())


LABELS = [0] * 6 + [1] * 3 + [2] + [3] * 5  # freq (0.6, 0.3, 0.1), 5 background rows


def test_head_normalised_weights_never_fall_below_one():
    loss = _det_loss(normalise='head', power=1.0, eps=1e-4, max_weight=100.0)
    _fold(loss, LABELS)
    freq = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    expected = (freq + 1e-4) ** -1 / (0.6 + 1e-4) ** -1  # the head class weighs 1
    torch.testing.assert_close(loss.adaptive.weights(), expected.float())
    assert float(loss.adaptive.weights().min()) == pytest.approx(1.0)
    # 'mean' puts the head below 1 (it pays for the tail); 'head' does not
    mean = _det_loss(power=1.0, max_weight=100.0)
    _fold(mean, LABELS)
    assert float(mean.adaptive.weights()[0]) < 1


def test_head_normalisation_clips_and_keeps_unseen_classes_at_one():
    freq = torch.tensor([0.9, 0.0, 0.1], dtype=torch.float64)
    w = normalise_weights(-torch.log(freq + 1e-4), freq, 'row', 5.0, log_space=True,
                          normalise='head')
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 5.0], dtype=torch.float64))
    nothing = normalise_weights(torch.zeros(3, dtype=torch.float64),
                                torch.zeros(3, dtype=torch.float64), 'row', 5.0,
                                log_space=True, normalise='head')
    assert torch.equal(nothing, torch.ones(3, dtype=torch.float64))


def test_positive_weights_scale_only_the_labelled_element():
    loss = _det_loss(normalise='head', apply_to='positive', power=1.0, max_weight=100.0)
    _fold(loss, LABELS)
    w = loss.adaptive.weights().double()
    torch.manual_seed(0)
    logits = torch.randn(7, 3, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 3, 2, 3, 0])
    label_weight = torch.rand(7, dtype=torch.float64)
    out = loss(logits, labels, weight=label_weight, avg_factor=4.0)
    element = torch.ones(7, 3, dtype=torch.float64)
    for i, c in enumerate(labels.tolist()):
        if c < 3:
            element[i, c] = w[c]  # the false classes and background rows keep 1
    expected = (_elements64(logits, labels, 2.0) * element * label_weight[:, None]).sum() / 4
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-7)
    # 'row' also scales the labelled rows' false classes: a different loss
    row = _det_loss(normalise='head', power=1.0, max_weight=100.0)
    _fold(row, LABELS)
    assert not torch.allclose(row(logits, labels, weight=label_weight, avg_factor=4.0), out)


def test_positive_mode_in_the_functional_equals_per_element_weights(backend):
    if backend == 'cpu':
        pytest.skip('the C kernel takes no per-element weights: this call runs elsewhere')
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5, requires_grad=True)
    labels = torch.tensor([[0, 3, 1, 255, 2], [1, 1, 0, 3, 2]])
    cw = torch.tensor([0.5, 2.0, 3.0, 1.5])
    got = dual_focal_loss(logits, labels, 2.0, use_sigmoid=False, class_weight=cw,
                          class_weight_mode='positive', ignore_index=255)
    onehot = torch.zeros(2, 4, 5)
    known = labels != 255
    onehot.scatter_(1, torch.where(known, labels, 0).unsqueeze(1), known.unsqueeze(1).float())
    element = torch.where(onehot > 0, cw.view(1, 4, 1), torch.ones(()))
    want = dual_focal_loss(logits, labels, 2.0, use_sigmoid=False, weight=element,
                           ignore_index=255)
    torch.testing.assert_close(got, want)
    g1, = torch.autograd.grad(got, logits)
    g2, = torch.autograd.grad(want, logits)
    torch.testing.assert_close(g1, g2)


def test_class_gamma_follows_the_running_frequency():
    loss = _det_loss(gamma_scale=3.0, power=0.0)  # exponents only: all weights 1
    torch.manual_seed(2)
    logits = torch.randn(6, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    before = loss(logits, labels)  # nothing counted: every class at gamma
    torch.testing.assert_close(before.double(), _elements64(logits, labels, 2.0).mean(),
                               rtol=1e-5, atol=1e-7)
    _fold(loss, LABELS)
    gamma = 2.0 + 3.0 * (1 - torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64) / 0.6)
    torch.testing.assert_close(loss.adaptive.gamma_offsets().double(), gamma - 2.0)
    loss.eval()
    out = loss(logits, labels)
    torch.testing.assert_close(out.double(), _elements64(logits, labels, gamma).mean(),
                               rtol=1e-5, atol=1e-7)
    assert float(loss.gamma) == 2.0  # the module's own exponent is untouched


def test_class_gamma_with_a_learnable_gamma_keeps_the_pull_on_gamma_alone():
    loss = DualFocalLoss(use_sigmoid=True, gamma=2.0, learnable_gamma='scalar',
                         class_weight='adaptive', num_classes=3,
                         adaptive_weight=dict(gamma_scale=2.0, momentum=0.0))
    _fold(loss, LABELS)
    logits = torch.randn(5, 3, requires_grad=True)
    out = loss(logits, torch.tensor([0, 1, 2, 3, 2]))
    out.backward()
    assert loss.gamma_logit.grad is not None and torch.isfinite(loss.gamma_logit.grad).all()
    assert float(loss.last_gamma_pull) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('settings, error, words', [
    (dict(normalise='max'), ValueError, "normalise must be one of ('mean', 'head')"),
    (dict(apply_to='negative'), ValueError, "apply_to must be one of"),
    (dict(gamma_scale=-1.0), ValueError, 'gamma_scale must be a number in [0, 20]'),
    (dict(gamma_scale=True), TypeError, 'gamma_scale must be a number'),
    (dict(gamma_scale=float('nan')), ValueError, 'gamma_scale must be'),
])
def test_bad_settings_are_refused(settings, error, words):
    with pytest.raises(error) as info:
        AdaptiveClassWeight(3, **settings)
    assert words in str(info.value)


def test_an_exponent_beyond_the_bound_is_refused_at_build():
    with pytest.raises(ValueError, match='gamma_scale=19.0 would raise gamma to 21.0'):
        DualFocalLoss(gamma=2.0, class_weight='adaptive', num_classes=3,
                      adaptive_weight=dict(gamma_scale=19.0), learnable_gamma=False)
    with pytest.raises(ValueError, match=r'gamma \(or gamma_max\) \+ gamma_scale'):
        DualFocalLoss(gamma=2.0, learnable_gamma='scalar', gamma_max=15.0,
                      class_weight='adaptive', num_classes=3,
                      adaptive_weight=dict(gamma_scale=6.0))
    DualFocalLoss(gamma=2.0, class_weight='adaptive', num_classes=3,
                  adaptive_weight=dict(gamma_scale=8.0))  # 10 <= 20: fine
