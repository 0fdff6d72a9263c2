"""The C kernel of the CPU sigmoid path against the PyTorch core and the
golden values; when it applies, its build cache and its fallback."""
import json
import warnings
from pathlib import Path

import pytest
import torch

from dfl_mm import DualFocalLoss, ops
from dfl_mm.functional import dual_focal_loss
from dfl_mm.ops import cpu as cpu_kernel

from testkit import loss_and_grads

CASES = json.loads((Path(__file__).parent / 'data' / 'dfl_golden.json').read_text())['cases']


@pytest.fixture
def kernel(monkeypatch, switch):
    """Run on the C kernel, strictly (fails if it cannot be built); ``switch`` moves."""
    switch('cpu')
    monkeypatch.switch = switch
    return monkeypatch


def _inputs(rows=2000, classes=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=gen) * 6
    extremes = torch.tensor([1e4, -1e4, 45.0, -45.0, 0.0, 1e-6])  # incl. the u < -30 tail
    logits[0, :6] = extremes[:classes]
    labels = torch.randint(0, classes + 1, (rows, ), generator=gen)  # classes = background
    labels[0] = 1
    return logits, labels


@pytest.mark.parametrize('options', [
    dict(),
    dict(weight='rows'),
    dict(weight='rows1'),
    dict(alpha=0.25, class_weight='random'),
    dict(reduction='sum', ignore_index=-1),
    dict(avg_factor=37.0),
], ids=['plain', 'row-weight', 'row-weight-N1', 'alpha-class-weight', 'sum-ignore', 'avg-factor'])
@pytest.mark.parametrize('gamma', [0.3, 2.0, 7.5])
def test_kernel_matches_the_pytorch_core(kernel, options, gamma):
    logits, labels = _inputs()
    options = dict(options)
    gen = torch.Generator().manual_seed(1)
    if options.get('weight') == 'rows':
        options['weight'] = torch.rand(len(labels), generator=gen)
    elif options.get('weight') == 'rows1':
        options['weight'] = torch.rand(len(labels), 1, generator=gen)
    if options.get('class_weight') == 'random':
        options['class_weight'] = torch.rand(logits.shape[1], generator=gen).tolist()
    if 'ignore_index' in options:
        labels[::7] = options['ignore_index']
    fast = loss_and_grads('cpu', logits, labels, gamma, **options)
    # truth: the core in float64
    core = loss_and_grads('reference', logits.double(), labels, gamma, **options)
    loss, grad, grad_gamma = fast
    assert loss.dtype == torch.float32 and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), core[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), core[1], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grad_gamma.double(), core[2], rtol=1e-4, atol=1e-6)
    if 'ignore_index' in options:
        assert (grad[::7] == 0).all()


@pytest.mark.parametrize('case', CASES, ids=lambda c: f"{c['mode']}-g{c['gamma']}-{c['label']}")
def test_kernel_golden_values_in_float32(kernel, case):
    """The golden cases (losses down to 1e-13) through the float32 kernel."""
    logits = torch.tensor([case['logits']], dtype=torch.float32)
    loss, grad, grad_gamma = loss_and_grads('cpu', logits, torch.tensor([case['label']]),
                                             case['gamma'], case['mode'] == 'sigmoid',
                                             reduction='sum')
    torch.testing.assert_close(loss.double(), torch.tensor(case['loss_sum'], dtype=torch.float64),
                               rtol=2e-5, atol=1e-30)
    torch.testing.assert_close(grad[0].double(), torch.tensor(case['grad_logits'],
                                                              dtype=torch.float64),
                               rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(grad_gamma.double(), torch.tensor(case['grad_gamma'],
                                                                 dtype=torch.float64),
                               rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize('options', [
    dict(), dict(weight='pixels'), dict(class_weight='random', reduction='sum'),
    dict(avg_non_ignore=True)], ids=['plain', 'pixel-weight', 'class-weight-sum', 'mean'])
@pytest.mark.parametrize('gamma', [0.5, 2.0, 6.0])
def test_softmax_kernel_matches_the_pytorch_core(kernel, options, gamma):
    """mmseg-style dense maps with 255-pixels, an odd size (partial blocks) and
    pixels with +-1e4 logits and ties."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 13, 17, generator=gen) * 4
    logits[0, :, 0, 0] = torch.tensor([1e4, -1e4, 40.0, 40.0, -40.0])
    logits[0, :, 0, 1] = torch.tensor([-1e4, 1e4, -1e4, -1e4, -1e4])
    logits[1, :, 3, 3] = 0.0  # a five-way tie
    labels = torch.randint(0, 5, (2, 13, 17), generator=gen)
    labels[0, 0, 1] = 2
    labels[1, 5:7] = 255
    options = dict(options, ignore_index=255)
    if options.get('weight') == 'pixels':
        options['weight'] = torch.rand(2, 13, 17, generator=gen)
    if options.get('class_weight') == 'random':
        options['class_weight'] = torch.rand(5, generator=gen).tolist()
    if options.pop('avg_non_ignore', False):
        options['avg_factor'] = float((labels != 255).sum())
    fast = loss_and_grads('cpu', logits, labels, gamma, False, **options)
    core = loss_and_grads('reference', logits, labels, gamma, False, **options)
    truth = loss_and_grads('reference', logits.double(), labels, gamma, False, **options)
    assert torch.isfinite(fast[1]).all() and (fast[1][1, :, 5:7] == 0).all()
    torch.testing.assert_close(fast[0], core[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast[2], core[2], rtol=1e-4, atol=1e-6)
    # the float32 core's gradient away from the +-1e4 pixels, which it can not
    # resolve (its exp(z - logsumexp) rounds there; the kernel's normaliser is exact)
    torch.testing.assert_close(fast[1][..., 1:, :], core[1][..., 1:, :], rtol=1e-4, atol=1e-6)
    # against float64 everywhere
    torch.testing.assert_close(fast[1].double(), truth[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast[0].double(), truth[0], rtol=1e-5, atol=1e-6)


def test_kernel_dispatch_covers_exactly_its_cases(kernel):
    from dfl_mm.ops.inputs import LossInputs as _Inputs
    logits, labels = _inputs(rows=8, classes=3)
    row = torch.ones(8, 1, 1)

    def inputs(logits3=logits.view(8, 3, 1), target=labels.view(8, 1, 1), **kw):
        fields = dict(row_weight=row, elem_weight=None, class_weight=None, alpha=None,
                      ignore_index=None, use_sigmoid=True)
        fields.update(kw)
        return _Inputs(logits3, target, **fields)

    scalar, per_class = torch.tensor(2.0), torch.full((3, ), 2.0)
    assert cpu_kernel.applies(inputs(), scalar, True)
    assert not cpu_kernel.applies(inputs(), per_class, True)
    assert not cpu_kernel.applies(inputs(), scalar, False)  # 'none': the core
    assert not cpu_kernel.applies(inputs(logits3=logits.double().view(8, 3, 1)), scalar, True)
    assert not cpu_kernel.applies(inputs(logits3=logits.view(2, 3, 4)), scalar, True)  # dense map
    assert cpu_kernel.applies(inputs(logits3=logits.view(2, 3, 4), target=labels.view(2, 1, 4),
                                        use_sigmoid=False, row_weight=None), scalar, True)
    assert not cpu_kernel.applies(inputs(target=torch.rand(8, 3, 1)), scalar, True)  # soft targets
    assert not cpu_kernel.applies(inputs(elem_weight=torch.rand(8, 3, 1)), scalar, True)
    assert not cpu_kernel.applies(inputs(logits3=logits.t().contiguous().t().view(8, 3, 1)),
                                     scalar, True)  # not contiguous
    # the registry takes what applies to the kernel, the reference the rest
    assert ops.select(inputs(), scalar, True) is cpu_kernel
    assert ops.select(inputs(), per_class, True) is ops.reference
    with ops.use('reference'):
        assert ops.select(inputs(), scalar, True) is ops.reference
    kernel.setenv('DFL_MM_BACKEND', 'yes')
    kernel.switch(None)
    with pytest.raises(ValueError, match=r"DFL_MM_BACKEND must be one of \('auto', "
                                         r"'triton', 'cpu', 'reference'\), got 'yes'"):
        ops.select(inputs(), scalar, True)


def test_learnable_gamma_through_the_mmdet_call(kernel):
    """DualFocalLoss as RetinaHead calls it: same value and gradients either way."""
    logits, labels = _inputs(rows=500, classes=10)
    label_weights = torch.rand(500)
    results = []
    for setting in ('cpu', 'reference'):
        kernel.switch(setting)
        loss = DualFocalLoss(use_sigmoid=True, learnable_gamma='scalar')
        with torch.no_grad():
            loss.gamma_logit.add_(0.4)
        z = logits.clone().requires_grad_()
        out = loss(z, labels, label_weights, avg_factor=42.0)
        out.backward()
        results.append((out.detach(), z.grad, loss.gamma_logit.grad))
    for fast, core in zip(*results):
        torch.testing.assert_close(fast, core, rtol=1e-5, atol=1e-7)


def test_build_is_cached_and_failure_falls_back_or_raises(kernel, tmp_path):
    # a fresh cache: one library file, reused by a second build
    kernel.setenv('DFL_MM_CACHE_DIR', str(tmp_path / 'cache'))
    path = cpu_kernel._build()
    assert Path(path).is_file() and cpu_kernel._build() == path
    assert len(list((tmp_path / 'cache').iterdir())) == 1

    # no compiler: auto warns once and the loss comes from the core
    kernel.setenv('DFL_MM_CACHE_DIR', str(tmp_path / 'empty'))
    kernel.setenv('CC', str(tmp_path / 'no-such-compiler'))
    kernel.setattr(cpu_kernel, '_lib', None)
    kernel.setattr(cpu_kernel, '_failure', None)
    kernel.setattr(ops, '_warned', set())
    kernel.switch('auto')
    logits, labels = _inputs(rows=50, classes=4)
    with pytest.warns(ops.BackendFallbackWarning, match='the cpu backend .* failed: the CPU '
                      'kernel could not be built'):
        fallback = dual_focal_loss(logits, labels, 2.0)
    kernel.switch('reference')
    torch.testing.assert_close(fallback, dual_focal_loss(logits, labels, 2.0))
    kernel.switch('auto')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the warning is not repeated
        dual_focal_loss(logits, labels, 2.0)
    kernel.setattr(cpu_kernel, '_failure', None)
    kernel.switch('cpu')
    with pytest.raises(RuntimeError, match='DFL_MM_BACKEND=cpu names the cpu backend .* '
                       'could not be built'):
        dual_focal_loss(logits, labels, 2.0)


@pytest.mark.parametrize('classes', [2**31 - 1, 2**40, 2**62],
                         ids=['malloc-fails', 'beyond-int32', 'size-overflows'])
@pytest.mark.parametrize('name', ['softmax_forward', 'softmax_backward',
                                  'softmax_forward_backward'])
def test_failed_scratch_allocation_raises_memory_error(kernel, classes, name):
    """The softmax per-thread scratch (classes x block floats, up to three) can not be
    allocated: a MemoryError naming it, not a crash. No pixel is read (batch 0)."""
    logits, labels = torch.zeros(4), torch.zeros(4, dtype=torch.int64)
    class_weight, grad = torch.ones(4), torch.zeros(4)
    args = cpu_kernel.DflArgs(logits=logits.data_ptr(), labels=labels.data_ptr(),
                              pos_weight=class_weight.data_ptr(),
                              neg_weight=class_weight.data_ptr(), batch=0, classes=classes,
                              spatial=0, gamma=2.0, scale=1.0, grad=grad.data_ptr(), threads=2)
    with pytest.raises(MemoryError, match=f'could not allocate the softmax scratch '
                       f'for {classes} classes'):
        cpu_kernel.run(name, args)
    args.classes = 3  # the same call with a sane class count runs
    out = cpu_kernel.run(name, args)
    assert (out.loss == 0.0) if name != 'softmax_backward' else (out.grad_gamma == 0.0)


@pytest.mark.parametrize('name', cpu_kernel.ENTRY_POINTS)
def test_every_entry_point_reports_bad_arguments(kernel, name):
    """Every entry point returns a status: arguments it can not use are refused."""
    logits, labels, weight = torch.zeros(4), torch.zeros(4, dtype=torch.int64), torch.ones(4)
    grad = torch.zeros(4)
    good = dict(logits=logits.data_ptr(), labels=labels.data_ptr(), pos_weight=weight.data_ptr(),
                neg_weight=weight.data_ptr(), batch=1, classes=4, spatial=1, gamma=2.0,
                scale=1.0, grad=grad.data_ptr(), threads=1)
    cpu_kernel.run(name, cpu_kernel.DflArgs(**good))
    for field, bad in (('classes', 0), ('threads', 0), ('labels', None), ('batch', -1),
                       ('pos_weight', None)):
        with pytest.raises(RuntimeError, match=f'dfl_{name} refused its arguments'):
            cpu_kernel.run(name, cpu_kernel.DflArgs(**dict(good, **{field: bad})))


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_fused_forward_backward_matches_the_two_passes(kernel, use_sigmoid):
    """Softmax with gradients needed: the kernel computes them with the loss (one
    pass) and backward only scales them: same loss as the forward-only pass, same gradients
    as the separate backward pass, and a second backward (retain_graph) the same."""
    torch.manual_seed(3)
    if use_sigmoid:
        z, labels = _inputs(rows=300, classes=7)
        kwargs = dict(weight=torch.rand(300), alpha=0.25)
    else:
        z = 4 * torch.randn(2, 5, 9, 11)
        labels = torch.randint(0, 5, (2, 9, 11))
        labels[0, :2] = 255
        kwargs = dict(ignore_index=255, class_weight=[1.0, 2.0, 0.5, 1.5, 3.0])
    calls = []
    fused = cpu_kernel.forward_backward
    kernel.setattr(cpu_kernel, 'forward_backward',
                   lambda *a: calls.append(1) or fused(*a))
    with torch.no_grad():  # no gradients needed: the forward-only pass
        plain = dual_focal_loss(z, labels, 1.7, use_sigmoid=use_sigmoid, **kwargs)
    assert not calls
    zz = z.clone().requires_grad_()
    gamma = torch.tensor(1.7, requires_grad=True)
    loss = dual_focal_loss(zz, labels, gamma, use_sigmoid=use_sigmoid, **kwargs)
    assert calls == ([] if use_sigmoid else [1])  # sigmoid: two passes, nothing saved
    torch.testing.assert_close(loss.detach(), plain, rtol=1e-6, atol=0)
    (3.0 * loss).backward(retain_graph=True)
    first = (zz.grad.clone(), gamma.grad.clone())
    zz.grad, gamma.grad = None, None
    (3.0 * loss).backward()  # the saved gradients are scaled out of place: still there
    torch.testing.assert_close(zz.grad, first[0], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gamma.grad, first[1], rtol=1e-6, atol=1e-9)
    kernel.switch('reference')  # and the reference agrees
    zc = z.clone().requires_grad_()
    gc = torch.tensor(1.7, requires_grad=True)
    (3.0 * dual_focal_loss(zc, labels, gc, use_sigmoid=use_sigmoid, **kwargs)).backward()
    torch.testing.assert_close(first[0], zc.grad, rtol=2e-4, atol=1e-6)
    torch.testing.assert_close(first[1], gc.grad, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_results_are_bitwise_the_same_for_any_thread_count(kernel, use_sigmoid):
    """The sums go over fixed chunks in a fixed order and each element's gradient is
    computed alone: 1, 2 and 3 threads give the same bits, down to the kernel's
    float64 sums (an OpenMP reduction over per-thread partial sums does not:
    losses of 1e4 next to ones of 1e-9 make the order of a float64 sum show)."""
    gen = torch.Generator().manual_seed(5)
    if use_sigmoid:
        z, labels = _inputs(rows=5000, classes=9, seed=5)
        z[::37, 0] = torch.randn(len(z[::37]), generator=gen) * 1e4
        batch, classes, spatial = 5000, 9, 1
    else:
        batch, classes, spatial = 2, 7, 100 * 77  # several chunks of pixel blocks
        labels = torch.randint(0, classes, (batch, spatial), generator=gen)
        # confidently right (losses ~1e-11) but for a few blocks' wrong pixels
        z = torch.randn(batch, classes, spatial, generator=gen)
        z.scatter_add_(1, labels[:, None], torch.full((batch, 1, spatial), 20.0))
        z[:, 0, ::300] = torch.randn(batch, len(z[0, 0, ::300]), generator=gen) * 1e4
    labels = labels.reshape(-1).contiguous()
    weight = torch.rand(labels.numel(), generator=gen)
    class_weight = torch.rand(classes, generator=gen)
    mode = 'sigmoid' if use_sigmoid else 'softmax'
    results = []
    for threads in (1, 2, 3):
        grad = torch.empty_like(z)
        args = cpu_kernel.DflArgs(
            logits=z.data_ptr(), labels=labels.data_ptr(), row_weight=weight.data_ptr(),
            pos_weight=class_weight.data_ptr(), neg_weight=class_weight.data_ptr(),
            batch=batch, classes=classes, spatial=spatial, gamma=1.3, scale=0.5,
            grad=grad.data_ptr(), threads=threads)
        forward = cpu_kernel.run(f'{mode}_forward', args).loss
        if use_sigmoid:
            sums = (forward, cpu_kernel.run('sigmoid_backward', args).grad_gamma)
        else:
            fused = cpu_kernel.run('softmax_forward_backward', args)
            sums = (fused.loss, fused.grad_gamma, forward)
        results.append((sums, grad))
    for sums, grad in results[1:]:
        assert sums == results[0][0]
        assert torch.equal(grad, results[0][1])


def test_kept_gradients_are_handed_out_once_and_recomputed_after(kernel):
    """A mean loss of weight 1 gets an incoming gradient of 1: the first backward
    returns the gradients the forward computed, without a pass over them (a leaf
    may take that very tensor as its .grad); every later backward (retain_graph)
    recomputes them, so accumulating into that .grad changes nothing it reads."""
    torch.manual_seed(4)
    z = (4 * torch.randn(2, 5, 9, 11)).requires_grad_()
    labels = torch.randint(0, 5, (2, 9, 11))
    loss = dual_focal_loss(z, labels, 1.7, use_sigmoid=False)
    loss.backward(retain_graph=True)
    once = z.grad.clone()
    loss.backward(retain_graph=True)
    (2.0 * loss).backward()
    torch.testing.assert_close(z.grad, 4.0 * once, rtol=1e-5, atol=1e-9)
    kernel.switch('reference')
    zc = z.detach().clone().requires_grad_()
    dual_focal_loss(zc, labels, 1.7, use_sigmoid=False).backward()
    torch.testing.assert_close(once, zc.grad, rtol=2e-4, atol=1e-7)


def test_the_abi_handshake_checks_the_structs_at_load():
    """The library reports the sizes and field offsets of DflArgs / DflOut; the loader
    compares them with its ctypes mirrors (a mismatch: the backend is unavailable)."""
    import ctypes

    lib = cpu_kernel._load()
    if lib is None:
        pytest.skip(f'C kernel unavailable: {cpu_kernel.unavailable()}')
    cpu_kernel.check_abi(lib)  # the real library agrees
    expected = cpu_kernel.abi()
    assert expected[:2] == [ctypes.sizeof(cpu_kernel.DflArgs), ctypes.sizeof(cpu_kernel.DflOut)]

    class Shifted:  # a library whose DflArgs has grown a field
        class dfl_abi:  # noqa: N801  (the C symbol's name)
            argtypes = restype = None

            def __new__(cls, out, n):
                for i in range(n):
                    out[i] = expected[i] + (8 if i == 0 else 0)
                return n

    with pytest.raises(RuntimeError, match='ABI mismatch'):
        cpu_kernel.check_abi(Shifted)
