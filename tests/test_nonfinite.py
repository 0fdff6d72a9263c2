"""Ignored and zero-weight elements are inert; non-finite logits that count show.

Rule (docs/DFL_SPEC.md, section 5): elements that are ignored or weighted 0
contribute exactly 0 to the loss and to every gradient, whatever their logits
(NaN, inf); a NaN logit that counts gives a NaN loss, an infinite one the
loss's limit (docs/loss.md, "NaN and inf"), never a finite loss with NaN
gradients. Checked on every backend: the PyTorch reference, the C kernel and
the Triton kernels (Triton's interpreter without a GPU), and in both forms (the
Neurocomputing form: torch ops whatever the backend, run once).
"""
import math
import warnings

import pytest
import torch

from testkit import loss_and_grads

FORMS = ['arxiv2019', 'neurocomputing2021']


@pytest.fixture(params=FORMS)
def form(request, backend):
    """Each form; the Neurocomputing form's torch ops once (with the reference)."""
    if request.param != 'arxiv2019' and backend != 'reference':
        pytest.skip('the Neurocomputing form has one implementation (torch ops)')
    return request.param


def _loss_and_grad(backend, z, labels, **kwargs):
    """Loss and logits gradient on ``backend``, which must be the one that ran."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # interpreter: masked lanes
        loss, grad, _ = loss_and_grads(backend, z, labels, reduction='sum', **kwargs)
    return loss, grad


def _poison(z, rows, values=(math.nan, math.inf, -math.inf)):
    bad = z.clone()
    for i, row in enumerate(rows):
        bad[row] = values[i % len(values)]
    return bad


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_ignored_and_zero_weight_rows_are_inert(backend, form, use_sigmoid):
    torch.manual_seed(0)
    z = 3 * torch.randn(12, 5)
    labels = torch.randint(0, 5, (12, ))
    labels[[2, 7]] = 255  # ignored
    weight = torch.ones(12)
    weight[[4, 9]] = 0.0  # weighted 0
    dead = [2, 4, 7, 9]
    kwargs = dict(use_sigmoid=use_sigmoid, weight=weight, ignore_index=255, form=form)
    clean_loss, clean_grad = _loss_and_grad(backend, z, labels, **kwargs)
    loss, grad = _loss_and_grad(backend, _poison(z, dead), labels, **kwargs)
    assert torch.isfinite(loss) and torch.equal(loss, clean_loss)
    assert torch.isfinite(grad).all()
    assert not grad[dead].any()
    torch.testing.assert_close(grad, clean_grad, rtol=0, atol=0)


@pytest.mark.parametrize('how', ['alpha', 'element weight'])
def test_zero_weight_elements_are_inert_in_sigmoid_mode(backend, form, how):
    """Every negative element weighed 0 (by alpha = 1 in the default form, whose
    alpha weighs positives; by a per-element weight in both): their NaN logits do
    nothing."""
    if how == 'alpha' and form != 'arxiv2019':
        pytest.skip("the Neurocomputing form's alpha is its coefficient, not a weight")
    if how == 'element weight' and backend != 'reference':
        pytest.skip('an (N, C) weight map runs on the reference (the kernels take rows)')
    torch.manual_seed(1)
    z = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    mask = torch.ones_like(z, dtype=torch.bool)
    rows = torch.tensor([0, 1, 2, 3, 5])  # row 4 is background: all negatives
    mask[rows, labels[rows]] = False  # the positives keep their logits
    bad = torch.where(mask, torch.tensor(math.nan), z)
    kwargs = dict(alpha=1.0) if how == 'alpha' else dict(weight=(~mask).float(), form=form)
    loss, grad = _loss_and_grad(backend, bad, labels, **kwargs)
    clean_loss, _ = _loss_and_grad(backend, z, labels, **kwargs)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, clean_loss)
    assert not grad[mask].any()


@pytest.mark.parametrize('logits, use_sigmoid', [
    ([[math.inf, 0.0, 1.0]], False),  # was a 0.0 loss with NaN gradients
    ([[math.nan, 0.0, 1.0]], False),
    ([[0.5, math.nan, 1.0]], True),
    ([[-math.inf, 0.0, 1.0]], True),  # a confidently wrong positive: inf
])
def test_a_nonfinite_logit_that_counts_shows_in_the_loss(backend, form, logits, use_sigmoid):
    loss, grad = _loss_and_grad(backend, torch.tensor(logits), torch.tensor([0]),
                                use_sigmoid=use_sigmoid, form=form)
    assert not torch.isfinite(loss)


def test_dense_ignored_pixels_are_inert(backend, form):
    """The mmseg layout (B, C, H, W), where the C kernel runs its pixel blocks."""
    torch.manual_seed(2)
    z = 2 * torch.randn(2, 4, 6, 70)  # several 32-pixel blocks per row of pixels
    labels = torch.randint(0, 4, (2, 6, 70))
    labels[0, 1, 3:9] = 255
    labels[1, 5, 60:] = 255
    bad = z.clone()
    ignored = (labels == 255).unsqueeze(1).expand_as(z)
    bad[ignored] = torch.tensor([math.nan, math.inf, -math.inf]).repeat(
        int(ignored.sum()) // 3 + 1)[:int(ignored.sum())]
    kwargs = dict(use_sigmoid=False, ignore_index=255, form=form)
    clean_loss, clean_grad = _loss_and_grad(backend, z, labels, **kwargs)
    loss, grad = _loss_and_grad(backend, bad, labels, **kwargs)
    assert torch.equal(loss, clean_loss)
    assert not grad[ignored].any()
    torch.testing.assert_close(grad, clean_grad, rtol=0, atol=0)
