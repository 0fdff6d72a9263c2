"""The functional core against golden values, closed forms and its contract."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import dfl_mm.functional as fn
from dfl_mm import DualFocalLoss
from dfl_mm.functional import dual_focal_loss
from dfl_mm.ops import reference as core

DATA = Path(__file__).parent / 'data' / 'dfl_golden.json'
SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'testdata' / 'dfl_golden.json'
CASES = json.loads(DATA.read_text())['cases']


def test_golden_copy_matches_shared_testdata():
    if not SHARED.exists():
        pytest.skip('no ../shared/testdata beside the checkout')
    assert json.loads(SHARED.read_text()) == json.loads(DATA.read_text())


def _golden_eval(case, loss_fn=dual_focal_loss):
    z = torch.tensor([case['logits']], dtype=torch.float64, requires_grad=True)
    gamma = torch.tensor(case['gamma'], dtype=torch.float64, requires_grad=True)
    per_class = loss_fn(z, torch.tensor([case['label']]), gamma,
                        use_sigmoid=case['mode'] == 'sigmoid', reduction='none')
    per_class.sum().backward()
    return per_class.detach()[0], z.grad[0], gamma.grad


@pytest.mark.parametrize('case', CASES, ids=lambda c: f"{c['mode']}-g{c['gamma']}")
def test_golden_values_and_gradients(case):
    per_class, grad_z, grad_gamma = _golden_eval(case)
    expected = torch.tensor(case['loss_per_class'], dtype=torch.float64)
    torch.testing.assert_close(per_class, expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(per_class.sum(), torch.tensor(case['loss_sum'], dtype=torch.float64),
                               rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(grad_z, torch.tensor(case['grad_logits'], dtype=torch.float64),
                               rtol=1e-5, atol=1e-11)
    torch.testing.assert_close(grad_gamma, torch.tensor(case['grad_gamma'], dtype=torch.float64),
                               rtol=1e-5, atol=1e-11)


def _naive_loss(z, labels, gamma, use_sigmoid, reduction):
    """The textbook formula: what the golden file must be able to catch."""
    num = z.shape[1]
    if use_sigmoid:
        p = torch.sigmoid(z)
        y = F.one_hot(labels, num + 1)[:, :num].to(z.dtype)
    else:
        p = torch.softmax(z, dim=1)
        y = F.one_hot(labels, num).to(z.dtype)
    e = (y - p).abs()
    return -torch.log(-torch.expm1(gamma * torch.log(e)))


def test_golden_cases_catch_the_naive_formula():
    failures = 0
    for case in CASES:
        per_class, _, _ = _golden_eval(case, _naive_loss)
        expected = torch.tensor(case['loss_per_class'], dtype=torch.float64)
        failures += not torch.allclose(per_class, expected, rtol=1e-6, atol=1e-12)
    assert failures >= 3


@pytest.mark.parametrize('use_sigmoid', [True, False])
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_gradcheck_logits_and_gamma(use_sigmoid, reduction):
    torch.manual_seed(0)
    z = (3 * torch.randn(6, 4, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 5 if use_sigmoid else 4, (6, ))
    gamma = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(6, dtype=torch.float64)
    assert gradcheck(
        lambda z, g: dual_focal_loss(z, labels, g, use_sigmoid=use_sigmoid, weight=weight,
                                     class_weight=[1., 2., 3., .5], reduction=reduction),
        (z, gamma))


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_gradcheck_dense_per_class_gamma_with_ignore(use_sigmoid):
    torch.manual_seed(1)
    z = (3 * torch.randn(2, 4, 3, 5, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 4, (2, 3, 5))
    labels[0, 0, :2] = 255
    gamma = torch.tensor([0.7, 1.5, 2.5, 4.0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(
        lambda z, g: dual_focal_loss(z, labels, g, use_sigmoid=use_sigmoid, ignore_index=255,
                                     reduction='none'), (z, gamma))


def test_gradcheck_soft_targets_and_alpha():
    torch.manual_seed(2)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = torch.rand(5, 3, dtype=torch.float64)
    target[0] = torch.tensor([0., 1., 0.])
    assert gradcheck(lambda z: dual_focal_loss(z, target, 2.0, alpha=0.25, reduction='sum'),
                     (z, ))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_gamma_one_sigmoid_is_bce(seed):
    torch.manual_seed(seed)
    z = (4 * torch.randn(50, 7, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 8, (50, ))
    onehot = F.one_hot(labels, 8)[:, :7].to(z.dtype)
    ours = dual_focal_loss(z, labels, 1.0, reduction='none')
    bce = F.binary_cross_entropy_with_logits(z, onehot, reduction='none')
    torch.testing.assert_close(ours, bce, rtol=1e-10, atol=1e-12)
    (g_ours, ) = torch.autograd.grad(ours.sum(), z)
    (g_bce, ) = torch.autograd.grad(bce.sum(), z)
    torch.testing.assert_close(g_ours, g_bce, rtol=1e-9, atol=1e-12)


def test_gamma_one_softmax_is_ce_plus_false_classes():
    torch.manual_seed(3)
    z = (3 * torch.randn(40, 5, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 5, (40, ))
    ours = dual_focal_loss(z, labels, 1.0, use_sigmoid=False, reduction='sum')
    p = torch.softmax(z, dim=1)
    false = 1 - F.one_hot(labels, 5).to(z.dtype)
    ref = F.cross_entropy(z, labels, reduction='sum') - (false * torch.log1p(-p)).sum()
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, z)[0], torch.autograd.grad(ref, z)[0],
                               rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_loss_falls_as_gamma_grows(use_sigmoid):
    torch.manual_seed(4)
    z = torch.randn(30, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (30, ))
    losses = [dual_focal_loss(z, labels, g, use_sigmoid=use_sigmoid, reduction='none')
              for g in (0.5, 1.0, 2.0, 4.0)]
    for low, high in zip(losses, losses[1:]):
        assert (high <= low).all()
    gamma = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    dual_focal_loss(z, labels, gamma, use_sigmoid=use_sigmoid).backward()
    assert gamma.grad < 0


@pytest.mark.parametrize('use_sigmoid', [True, False])
@pytest.mark.parametrize('gamma', [0.05, 1.0, 20.0])
def test_extreme_logits_stay_finite(use_sigmoid, gamma):
    z = torch.tensor([[1e4, -1e4, 0.], [-1e4, 1e4, 3.], [-1e4, -1e4, -1e4]],
                     requires_grad=True)
    g = torch.tensor(gamma, requires_grad=True)
    labels = torch.tensor([0, 0, 2])
    loss = dual_focal_loss(z, labels, g, use_sigmoid=use_sigmoid, reduction='sum')
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all() and torch.isfinite(g.grad)
    # a confidently wrong element costs about its logit gap, not inf or a cap
    assert loss.item() > 1e4


def test_confident_wrong_pixel_fp32_matches_fp64():
    """Hazard 1 of the spec: ln(1 - p) of the argmax at a logit gap of 25-40."""
    z = torch.tensor([[30., 0., -2.], [0., 38., 1.]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    for use_sigmoid in (False, True):
        ref = dual_focal_loss(z, labels, 2.0, use_sigmoid=use_sigmoid, reduction='none')
        ours = dual_focal_loss(z.float(), labels, 2.0, use_sigmoid=use_sigmoid,
                               reduction='none')
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)


def test_autocast_bf16_is_finite_and_close_to_fp32():
    torch.manual_seed(5)
    z = (5 * torch.randn(64, 8)).requires_grad_()
    labels = torch.randint(0, 9, (64, ))
    ref = dual_focal_loss(z, labels, 2.0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        z16 = z.to(torch.bfloat16)
        loss = dual_focal_loss(z16, labels, 2.0)
    assert loss.dtype == torch.float32  # half precision in, float32 loss out
    loss.float().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(loss.float(), ref.detach(), rtol=2e-2, atol=1e-3)


def test_chunking_does_not_change_the_result(monkeypatch):
    torch.manual_seed(6)
    z = torch.randn(3, 5, 7, 11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (3, 7, 11))
    labels[1, 2] = 255
    results = []
    for chunk in (core.CHUNK_ELEMENTS, 7, 64):
        monkeypatch.setattr(core, "CHUNK_ELEMENTS", chunk)
        for use_sigmoid in (True, False):
            out = dual_focal_loss(z, labels, 1.5, use_sigmoid=use_sigmoid, ignore_index=255,
                                  reduction='none')
            grad = torch.autograd.grad(out.pow(2).sum(), z)[0]
            results.append((out.detach(), grad))
    for i in range(2, len(results)):  # same mode, first chunk size
        torch.testing.assert_close(results[i][0], results[i % 2][0])
        torch.testing.assert_close(results[i][1], results[i % 2][1])


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_ignored_pixels_never_change_the_loss(use_sigmoid):
    torch.manual_seed(7)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, :2] = 255
    loss = dual_focal_loss(z, labels, 2.0, use_sigmoid=use_sigmoid, ignore_index=255,
                           reduction='sum')
    z2 = z.detach().clone()
    z2[0, :, :2] = 100 * torch.randn(3, 2, 4)
    loss2 = dual_focal_loss(z2, labels, 2.0, use_sigmoid=use_sigmoid, ignore_index=255,
                            reduction='sum')
    torch.testing.assert_close(loss, loss2)
    loss.backward()
    assert (z.grad[0, :, :2] == 0).all() and (z.grad[0, :, 2:] != 0).any()


def test_weights_scale_rows_elements_and_classes():
    torch.manual_seed(8)
    z = torch.randn(10, 3, dtype=torch.float64)
    labels = torch.randint(0, 4, (10, ))
    elems = dual_focal_loss(z, labels, 2.0, reduction='none')
    row_w = torch.rand(10, dtype=torch.float64)
    elem_w = torch.rand(10, 3, dtype=torch.float64)
    cls_w = [0.5, 2.0, 1.0]
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0, weight=row_w, reduction='none'),
                               elems * row_w[:, None])
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0, weight=row_w[:, None],
                                               reduction='none'), elems * row_w[:, None])
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0, weight=elem_w, reduction='none'),
                               elems * elem_w)
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0, class_weight=cls_w,
                                               reduction='none'),
                               elems * torch.tensor(cls_w, dtype=torch.float64))
    pos = F.one_hot(labels, 4)[:, :3].bool()
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0, alpha=0.25, reduction='none'),
                               elems * torch.where(pos, 0.25, 0.75))


def test_reductions_and_avg_factor():
    torch.manual_seed(9)
    z = torch.randn(10, 3, dtype=torch.float64)
    labels = torch.randint(0, 4, (10, ))
    elems = dual_focal_loss(z, labels, 2.0, reduction='none')
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0, reduction='sum'), elems.sum())
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0), elems.mean())
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(dual_focal_loss(z, labels, 2.0, avg_factor=4.0),
                               elems.sum() / (4.0 + eps))


def test_zero_rows_give_zero_loss_that_backpropagates():
    z = torch.zeros(0, 80, requires_grad=True)
    gamma = torch.tensor(2.0, requires_grad=True)
    for kwargs in ({}, {'avg_factor': 0.0}, {'reduction': 'sum'}):
        loss = dual_focal_loss(z, torch.zeros(0, dtype=torch.long), gamma, **kwargs)
        assert loss.item() == 0 and loss.requires_grad
        loss.backward()
    assert z.grad.shape == (0, 80) and gamma.grad == 0


def test_float_hard_targets_equal_integer_labels():
    torch.manual_seed(10)
    z = torch.randn(20, 4, dtype=torch.float64)
    labels = torch.randint(0, 5, (20, ))
    onehot = F.one_hot(labels, 5)[:, :4].to(z.dtype)
    torch.testing.assert_close(dual_focal_loss(z, onehot, 2.0, reduction='none'),
                               dual_focal_loss(z, labels, 2.0, reduction='none'))


BAD_CALLS = [
    (dict(reduction='avg'), ValueError, "reduction must be one of"),
    (dict(gamma=0.0), ValueError, r'gamma must be in \(0, 20.0\], got 0.0'),
    (dict(gamma=-1), ValueError, 'gamma must be in'),
    (dict(gamma=25.0), ValueError, 'gamma must be in'),
    (dict(gamma='2'), TypeError, 'gamma must be a positive number'),
    (dict(target=torch.zeros(4, 2, dtype=torch.long)), ValueError,
     r'expected target of shape \(4,\)'),
    (dict(target=torch.zeros(4, dtype=torch.bool)), TypeError, 'integer labels or floats'),
    (dict(target=torch.tensor([0, 1, 4, 0])), ValueError,
     'label 4 out of range: expected 0..2 for classes and 3 for background'),
    (dict(target=torch.tensor([0, -1, 2, 0])), ValueError, 'label -1 out of range'),
    (dict(target=torch.tensor([0, 1, 3, 0]), use_sigmoid=False), ValueError,
     'label 3 out of range: expected 0..2'),
    (dict(target=torch.zeros(4, 3), use_sigmoid=False), TypeError,
     'softmax mode takes integer class labels'),
    (dict(target=torch.zeros(4, 2)), ValueError, r'expected float target of shape \(4, 3\)'),
    (dict(class_weight=[1., 2.]), ValueError, r'class_weight must have one value per class \(3,\)'),
    (dict(reduction='sum', avg_factor=2.0), ValueError, 'avg_factor can not be used'),
    (dict(alpha=1.5), ValueError, r'alpha must be in \[0, 1\]'),
    (dict(alpha=0.25, use_sigmoid=False), ValueError, 'alpha is a sigmoid-mode option'),
    (dict(weight=torch.ones(5)), ValueError, r'weight must have shape \(4,\)'),
    (dict(gamma=torch.ones(2)), ValueError, 'gamma must be a scalar or have one value per class'),
]


@pytest.mark.parametrize('kwargs,error,message', BAD_CALLS)
def test_bad_input_raises_clear_error(kwargs, error, message):
    call = dict(logits=torch.randn(4, 3), target=torch.tensor([0, 1, 3, 2]))
    call.update(kwargs)
    if call.get('use_sigmoid') is False and 'target' not in kwargs:
        call['target'] = torch.tensor([0, 1, 2, 2])
    logits, target = call.pop('logits'), call.pop('target')
    with pytest.raises(error, match=message):
        dual_focal_loss(logits, target, **call)


def test_softmax_on_one_channel_is_rejected():
    with pytest.raises(ValueError, match='softmax mode needs at least 2 channels'):
        dual_focal_loss(torch.randn(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long),
                        use_sigmoid=False)


def test_non_tensor_and_integer_logits_are_rejected():
    with pytest.raises(TypeError, match='logits must be a torch.Tensor'):
        dual_focal_loss([[0.0, 1.0]], torch.tensor([0]))
    with pytest.raises(TypeError, match='logits must be a floating point tensor'):
        dual_focal_loss(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]))


def test_element_function_small_loss_precision():
    """Losses near 1e-13 keep full relative precision (log1p branch)."""
    u = torch.tensor([30.0, 35.0], dtype=torch.float64)
    loss = fn.dual_focal_loss_elements(u, torch.tensor(1.0, dtype=torch.float64),
                                       with_grad=False)
    exact = torch.tensor([-math.log1p(-math.exp(-math.log1p(math.exp(v)))) for v in (30., 35.)],
                         dtype=torch.float64)
    torch.testing.assert_close(loss, exact, rtol=1e-12, atol=0)


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_ignore_index_that_is_a_valid_class_leaves_that_class_out(use_sigmoid):
    """mmseg configs ignore a real class this way: its rows weigh 0, nothing is refused."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    labels = torch.randint(0, 4, (2, 5, 6))
    ignored = dual_focal_loss(logits, labels, use_sigmoid=use_sigmoid, ignore_index=2,
                              reduction='none')
    as_weight = dual_focal_loss(logits, labels, use_sigmoid=use_sigmoid,
                                weight=(labels != 2).float(), reduction='none')
    torch.testing.assert_close(ignored, as_weight)
    assert (labels == 2).any() and ignored.sum() > 0


@pytest.mark.parametrize('gamma', [0.0, -1.0, float('nan'), 21.0, float('inf')])
def test_functional_refuses_a_bad_tensor_gamma(gamma):
    """The functional API checks what the module checks (no inf / NaN loss)."""
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r'gamma must be in \(0, 20.0\]'):
        dual_focal_loss(logits, labels, torch.tensor(gamma))
    per_class = torch.tensor([2.0, gamma, 1.0])
    with pytest.raises(ValueError, match=r'gamma must be in \(0, 20.0\]'):
        dual_focal_loss(logits, labels, per_class.requires_grad_())


@pytest.mark.parametrize('bad', [-1.0, float('nan'), float('inf')])
def test_functional_refuses_negative_or_nan_class_weight(bad):
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    for weights in ([1.0, bad, 1.0], torch.tensor([1.0, bad, 1.0])):
        with pytest.raises(ValueError, match='class_weight must be non-negative finite'):
            dual_focal_loss(logits, labels, class_weight=weights)
    with pytest.raises(ValueError, match='class_weight must be non-negative finite'):
        DualFocalLoss(class_weight=[1.0, bad])


# ------------------------------------------------ half precision
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


# ------------------------------------------------ one label rule on every backend
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


# ------------------------------------------------ second derivatives
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
