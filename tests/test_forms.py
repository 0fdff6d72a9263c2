"""The Neurocomputing 2021 form (``NeurocomputingDualFocalLoss``; the functional's
``form='neurocomputing2021'``) against an
independent float64 implementation, at extreme logits, in every mode of the
module, and its settings' errors (``torch.compile``: tests/test_compile.py's matrix)."""
import pytest
import torch
import torch.nn.functional as F

from dfl_mm import DualFocalLoss
from dfl_mm.functional import dual_focal_loss
from dfl_mm.models.loss import NeurocomputingDualFocalLoss as Journal

NC = 'neurocomputing2021'
# (alpha, beta, rho, gamma): the defaults, the circulating binary variant, rho > 1
SETTINGS = [(1.0, 1.0, 1.0, 2.0), (0.55, 3.0, 1.0, 2.0), (0.3, 2.0, 1.5, 0.7)]


def independent(logits, y, alpha, beta, rho, gamma, use_sigmoid):
    """``sum -y ln p - beta (1 - y) ln(rho - p) - alpha |y - p|^gamma`` per element,
    written straight from the formula (float64, nothing shared with the package)."""
    p = torch.sigmoid(logits) if use_sigmoid else torch.softmax(logits, dim=1)
    return -y * torch.log(p) - beta * (1 - y) * torch.log(rho - p) - alpha * (y - p).abs() ** gamma


def _one_hot(labels, channels):
    return F.one_hot(labels, channels + 1)[..., :channels].double()  # label C: all zero


@pytest.mark.parametrize('setting', SETTINGS)
@pytest.mark.parametrize('mode', ['sigmoid', 'softmax', 'sigmoid-soft'])
def test_values_and_gradients_match_the_formula(setting, mode):
    alpha, beta, rho, gamma = setting
    torch.manual_seed(0)
    z = (3 * torch.randn(40, 5, dtype=torch.float64)).requires_grad_()
    w = torch.rand(40, dtype=torch.float64)
    if mode == 'sigmoid-soft':
        y = torch.rand(40, 5, dtype=torch.float64) * (torch.rand(40, 5) < 0.5)
        y[:3] = _one_hot(torch.tensor([0, 2, 5]), 5)  # exact 0/1 entries in a float map
        target = y
    else:
        target = torch.randint(0, 6 if mode == 'sigmoid' else 5, (40, ))
        y = _one_hot(target, 5)
    got = dual_focal_loss(z, target, gamma, use_sigmoid=mode != 'softmax', weight=w,
                          form=NC, alpha=alpha, beta=beta, rho=rho, reduction='sum')
    gamma = float(torch.tensor(gamma))  # a number gamma is held in float32
    want = (independent(z, y, alpha, beta, rho, gamma, mode != 'softmax') * w[:, None]).sum()
    g_got, = torch.autograd.grad(got, z)
    g_want, = torch.autograd.grad(want, z)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('use_sigmoid', [True, False])
@pytest.mark.parametrize('rho', [1.0, 1 + 1e-9, 1.5])  # 1 + 1e-9 is 1.0 in float32
@pytest.mark.parametrize('gamma', [0.5, 2.0])
def test_finite_at_extreme_logits(use_sigmoid, rho, gamma):
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [5e3, 5e3, -1e4],
                      [-1e4, -1e4, -1e4]], requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1])
    loss = dual_focal_loss(z, labels, gamma, use_sigmoid=use_sigmoid, form=NC, rho=rho,
                           reduction='sum')
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    # the hard elements cost ~|z|: the exact ln(1 - p), no eps clipping it at ~16
    assert float(loss.detach()) > 5e3


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_rho_just_above_one_gives_float32_the_float64_loss(use_sigmoid):
    """rho - p = (rho - 1) + (1 - p): no ln(0) where rho rounds to 1 in float32."""
    z = torch.tensor([[30.0, -30.0, 0.0], [-1e4, 1e4, 3.0], [2.0, -1.0, 0.5]])
    labels = torch.tensor([1, 0, 2])
    got, want = (dual_focal_loss(x.requires_grad_(), labels, 2.0, use_sigmoid=use_sigmoid,
                                 form=NC, rho=1 + 1e-9, reduction='sum')
                 for x in (z.clone(), z.double()))
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_gamma_scale_is_refused_in_the_neurocomputing_form():
    """There the exponent enters as - alpha |y - p|^gamma: a larger per-class gamma
    would weigh a rare class's easy negatives more, the opposite of its promise."""
    with pytest.raises(ValueError, match="gamma_scale=1.0 is an option of DualFocalLoss's"):
        Journal(class_weight='adaptive', num_classes=3, adaptive_weight=dict(gamma_scale=1.0))
    Journal(class_weight='adaptive', num_classes=3)  # without: accepted


def test_the_default_form_is_unchanged_and_named():
    torch.manual_seed(1)
    z, labels = torch.randn(30, 4), torch.randint(0, 5, (30, ))
    assert torch.equal(dual_focal_loss(z, labels), dual_focal_loss(z, labels, form='arxiv2019'))
    assert not torch.allclose(dual_focal_loss(z, labels), dual_focal_loss(z, labels, form=NC))


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_module_modes_shapes_and_reductions_follow_the_default_form(use_sigmoid):
    torch.manual_seed(2)
    seg = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 6, 6))
    labels[0, :2] = 255
    for reduction in ('none', 'mean', 'sum'):
        kwargs = dict(use_sigmoid=use_sigmoid, reduction=reduction, ignore_index=255,
                      avg_non_ignore=True)
        ours, theirs = Journal(**kwargs), DualFocalLoss(**kwargs)
        assert ours(seg, labels).shape == theirs(seg, labels).shape
    # mmseg's 'mean' with avg_non_ignore: the per-pixel loss averaged over kept pixels
    per_pixel = Journal(use_sigmoid=use_sigmoid, reduction='none',
                              ignore_index=255)(seg, labels)
    mean = Journal(use_sigmoid=use_sigmoid, ignore_index=255,
                         avg_non_ignore=True)(seg, labels)
    kept = labels != 255
    torch.testing.assert_close(mean, per_pixel[kept].sum() / kept.sum())
    assert torch.all(per_pixel[~kept] == 0)


def test_module_learnable_gamma_adaptive_weights_gradcheck_and_double_backward():
    torch.manual_seed(3)
    loss = Journal(use_sigmoid=False, alpha=0.55, beta=3.0,
                         learnable_gamma='scalar', class_weight='adaptive', num_classes=4)
    loss.double()
    z = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (12, ))
    out = loss(z, labels)
    out.backward()
    assert loss.gamma_logit.grad is not None and torch.isfinite(loss.gamma_logit.grad)
    assert int(loss.adaptive.steps) == 1  # counted as the default form counts
    fn = lambda x: dual_focal_loss(x, labels, 1.7, use_sigmoid=False, form=NC, alpha=0.5,  # noqa
                                   beta=2.0, rho=1.2)
    assert torch.autograd.gradcheck(fn, (z.detach().requires_grad_(), ))
    assert torch.autograd.gradgradcheck(fn, (z.detach().requires_grad_(), ))


@pytest.mark.parametrize('kwargs, message', [
    (dict(beta=2.0), "settings of form='neurocomputing2021'"),
    (dict(rho=1.5), "settings of form='neurocomputing2021'"),
    (dict(form='neurocomputing'), 'form must be one of'),
    (dict(form=NC, rho=0.5), r'rho must be in \[1, inf\]'),
    (dict(form=NC, beta=-1.0), r'beta must be in \[0, inf\]'),
    (dict(form=NC, beta=float('inf')), 'beta must be a finite number'),
    (dict(form=NC, alpha=float('nan')), 'alpha must be in'),
])
def test_bad_form_settings_are_refused_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dual_focal_loss(torch.randn(3, 2), torch.tensor([0, 1, 2]), **kwargs)
    if kwargs.get('form') == NC:  # the module: its own loss, its own settings
        settings = {k: v for k, v in kwargs.items() if k != 'form'}
        with pytest.raises(ValueError, match=message):
            Journal(**settings)


@pytest.mark.parametrize('old', [dict(form=NC), dict(form=NC, beta=2.0, rho=1.5),
                                 dict(rho=1.5)])
def test_the_old_spelling_of_the_journal_form_names_the_new_one(old):
    """DualFocalLoss's options each mean one thing: its alpha weighs sigmoid positives;
    the journal form is NeurocomputingDualFocalLoss, with its own alpha, beta, rho."""
    with pytest.raises(TypeError, match="type='NeurocomputingDualFocalLoss' with alpha, beta"):
        DualFocalLoss(**old)
    from mmengine.registry import MODELS
    assert MODELS.get('NeurocomputingDualFocalLoss') is Journal


def test_the_effective_basis_beta_is_spelled_effective_beta():
    with pytest.raises(ValueError, match="now spelled 'effective_beta'"):
        DualFocalLoss(class_weight='adaptive', num_classes=3,
                      adaptive_weight=dict(basis='effective', beta=0.99))
    loss = DualFocalLoss(class_weight='adaptive', num_classes=3,
                         adaptive_weight=dict(basis='effective', effective_beta=0.99))
    assert loss.adaptive.effective_beta == 0.99


def test_alpha_is_the_forms_coefficient_in_softmax_mode_too():
    z, labels = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8, ))
    y = _one_hot(labels, 3)
    got = Journal(use_sigmoid=False, alpha=0.25, reduction='sum')(z, labels)
    torch.testing.assert_close(got, independent(z, y, 0.25, 1.0, 1.0, 2.0, False).sum())
