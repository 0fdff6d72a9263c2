"""The Triton kernels against the PyTorch reference.

Without a GPU they run in Triton's interpreter (TRITON_INTERPRET=1, set by
conftest.py); with one, the same tests run the compiled kernels on CUDA.
"""
import warnings

import pytest
import torch

from dfl_mm import ops
from dfl_mm.functional import dual_focal_loss
from dfl_mm.ops import triton_kernels as triton_dfl
from dfl_mm.ops.inputs import LossInputs

pytestmark = pytest.mark.skipif(not triton_dfl.available(), reason='triton is not installed')
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def _run(monkeypatch, use_triton, z, labels, gamma, **kwargs):
    launches = []
    launch = triton_dfl._launch

    def counted(inputs, *args, **kwargs):  # this call's launches, not the probe's
        if inputs.logits.numel() == z.numel():
            launches.append(int(args[1]))
        return launch(inputs, *args, **kwargs)

    monkeypatch.setattr(triton_dfl, '_launch', counted)
    z = z.detach().clone().requires_grad_()
    gamma = gamma.detach().clone().requires_grad_()
    with warnings.catch_warnings(), ops.use('triton' if use_triton else 'reference'):
        warnings.simplefilter('ignore', RuntimeWarning)  # interpreter: masked lanes
        out = dual_focal_loss(z, labels, gamma, **kwargs)
        upstream = torch.rand_like(out) if out.dim() else torch.tensor(1.7)
        (out * upstream).sum().backward()
    # a softmax sum needing gradients: one fused launch; else forward, then backward
    fused = out.dim() == 0 and not kwargs['use_sigmoid']
    expected = [3] if fused else [1 - (out.dim() == 0), 2]
    assert sorted(launches) == (expected if use_triton else [])
    return out.detach(), z.grad, gamma.grad


CASES = [
    dict(shape=(37, 5), use_sigmoid=True),
    dict(shape=(37, 5), use_sigmoid=True, per_class=True, alpha=0.25, reduction='none'),
    dict(shape=(2, 5, 6, 7), use_sigmoid=True, ignore=True, row_weight=True),
    dict(shape=(2, 5, 6, 7), use_sigmoid=False, ignore=True),
    dict(shape=(2, 5, 6, 7), use_sigmoid=False, ignore=True, per_class=True,
         class_weight=True, reduction='none'),
    dict(shape=(40, 3), use_sigmoid=False, elem_weight=True, reduction='mean'),
    dict(shape=(3, 19, 4, 9), use_sigmoid=False, row_weight=True, class_weight=True,
         reduction='sum'),
    # several class tiles (37 classes in tiles of 8) with per-class gamma
    dict(shape=(45, 37), use_sigmoid=True, per_class=True, elem_weight=True, ignore=True),
    dict(shape=(45, 37), use_sigmoid=True, per_class=True, class_weight=True,
         reduction='none'),
    dict(shape=(2, 1, 7, 5), use_sigmoid=True, ignore=True),  # binary head, one channel
]


@pytest.mark.parametrize('case', CASES, ids=lambda c: '-'.join(
    f'{k}' if v is True else f'{k}={v}' for k, v in c.items()))
def test_triton_matches_reference(monkeypatch, case):
    torch.manual_seed(0)
    shape, sigmoid = case['shape'], case['use_sigmoid']
    channels = shape[1]
    z = (4 * torch.randn(shape)).to(DEVICE)
    z.view(-1)[:3] = torch.tensor([40.0, -40.0, 25.0])  # far tails, both hazards
    row_shape = (shape[0], ) + shape[2:]
    labels = torch.randint(0, channels + int(sigmoid), row_shape, device=DEVICE)
    kwargs = dict(use_sigmoid=sigmoid, reduction=case.get('reduction', 'sum'))
    if case.get('ignore'):
        labels.view(-1)[::5] = 255
        kwargs['ignore_index'] = 255
    if case.get('row_weight'):
        kwargs['weight'] = torch.rand(row_shape, device=DEVICE)
    if case.get('elem_weight'):
        kwargs['weight'] = torch.rand(shape, device=DEVICE)
    if case.get('class_weight'):
        kwargs['class_weight'] = torch.rand(channels).tolist()
    if case.get('alpha'):
        kwargs['alpha'] = case['alpha']
    gamma = (torch.linspace(0.7, 3.0, channels) if case.get('per_class')
             else torch.tensor(2.0)).to(DEVICE)
    torch.manual_seed(1)
    ref = _run(monkeypatch, False, z, labels, gamma, **kwargs)
    torch.manual_seed(1)
    got = _run(monkeypatch, True, z, labels, gamma, **kwargs)
    for name, r, g in zip(('loss', 'grad logits', 'grad gamma'), ref, got):
        torch.testing.assert_close(g, r, rtol=2e-4, atol=2e-5, msg=name)


def test_triton_is_chosen_only_when_asked_or_on_cuda(monkeypatch):
    logits = torch.zeros(1, 2, 1, device=DEVICE)
    labels = torch.zeros(1, 1, 1, dtype=torch.long, device=DEVICE)
    inputs = LossInputs(logits, labels)
    gamma = torch.tensor(2.0)

    def chosen():
        return ops.select(inputs, gamma, True) is triton_dfl

    for name in ('reference', 'cpu'):
        with ops.use(name):
            assert not chosen()
    with ops.use('auto'):
        assert chosen() == (DEVICE == 'cuda')
    with ops.use('triton'):
        assert chosen()
        soft = LossInputs(logits, torch.zeros(1, 2, 1, device=DEVICE))
        assert ops.select(soft, gamma, True) is ops.reference  # soft targets: the reference
    # the environment variable
    for value, expected in (('triton', True), ('reference', False)):
        monkeypatch.setenv('DFL_MM_BACKEND', value)
        assert chosen() == expected
    monkeypatch.setenv('DFL_MM_BACKEND', 'yes')
    with pytest.raises(ValueError, match="DFL_MM_BACKEND must be one of .*got 'yes'"):
        chosen()


# --- the guard of the first use: probe, fallback, strict mode ---------------

@pytest.fixture
def fresh_probe(monkeypatch):
    """'auto' takes CPU tensors too (the interpreter), with no probe run yet."""
    monkeypatch.setattr(triton_dfl, 'AUTO_DEVICES', ('cuda', 'cpu'))
    monkeypatch.setattr(triton_dfl, '_probed', {})
    monkeypatch.setattr(ops, '_failed', {})
    monkeypatch.setattr(ops, '_warned', set())
    monkeypatch.delenv('DFL_MM_BACKEND', raising=False)
    return monkeypatch


def _seg_call():
    torch.manual_seed(3)
    z = (3 * torch.randn(2, 4, 5, 6)).requires_grad_()
    labels = torch.randint(0, 4, (2, 5, 6))
    labels[0, 0] = 255
    return z, labels


def _loss_and_grad(z, labels):
    z = z.detach().clone().requires_grad_()
    out = dual_focal_loss(z, labels, 2.0, use_sigmoid=False, ignore_index=255)
    out.backward()
    return out.detach(), z.grad


def _core_result(monkeypatch, z, labels):
    """What 'auto' gives without Triton: on CPU tensors, the C kernel."""
    with ops.use('cpu'):
        return _loss_and_grad(z, labels)


def _fallback_warnings(record):
    return [w for w in record if issubclass(w.category, ops.BackendFallbackWarning)]


def _calls(fn, times):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        results = [fn() for _ in range(times)]
    return results, _fallback_warnings(record)


def test_launch_error_warns_once_and_the_next_backend_takes_over(fresh_probe):
    launched = []

    def broken(*args, **kwargs):
        launched.append(1)
        raise RuntimeError('simulated PTX compile failure')

    fresh_probe.setattr(triton_dfl, '_launch', broken)
    z, labels = _seg_call()
    results, warned = _calls(lambda: _loss_and_grad(z, labels), 3)
    assert len(warned) == 1, [str(w.message) for w in warned]
    message = str(warned[0].message)
    assert 'simulated PTX compile failure' in message and 'softmax float32 on cpu' in message
    assert len(launched) == 1  # the probe's; then the next backend, without retrying
    want = _core_result(fresh_probe, z, labels)
    for got in results:
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_wrong_result_is_caught_by_the_probe(fresh_probe):
    launch = triton_dfl._launch

    def wrong(inputs, gamma, mode, upstream=None):
        out, grad, gamma_grad = launch(inputs, gamma, mode, upstream)
        return out * 1.01, grad, gamma_grad  # loss off by 1 %, gradients right

    fresh_probe.setattr(triton_dfl, '_launch', wrong)
    z, labels = _seg_call()
    results, warned = _calls(lambda: _loss_and_grad(z, labels), 2)
    assert len(warned) == 1
    assert 'loss differs from the PyTorch reference on a probe: relative error 0.01' in str(
        warned[0].message)
    for got in results:
        torch.testing.assert_close(got, _core_result(fresh_probe, z, labels), rtol=0, atol=0)


def test_wrong_gradient_is_caught_by_the_probe(fresh_probe):
    launch = triton_dfl._launch

    def wrong(inputs, gamma, mode, upstream=None):
        out, grad, gamma_grad = launch(inputs, gamma, mode, upstream)
        return out, -grad, gamma_grad

    fresh_probe.setattr(triton_dfl, '_launch', wrong)
    z, labels = _seg_call()
    _, warned = _calls(lambda: _loss_and_grad(z, labels), 1)
    assert len(warned) == 1 and 'd loss / d logits differs' in str(warned[0].message)


def test_strict_mode_raises_instead_of_falling_back(fresh_probe):
    def broken(*args, **kwargs):
        raise RuntimeError('simulated launch failure')

    fresh_probe.setattr(triton_dfl, '_launch', broken)
    z, labels = _seg_call()
    for _ in range(2):  # every call, not only the first
        with ops.use('triton'), pytest.raises(
                RuntimeError, match=r'DFL_MM_BACKEND=triton names the triton backend \(softmax '
                r'float32 on cpu\), which failed: RuntimeError: simulated launch failure'):
            _loss_and_grad(z, labels)


def test_a_launch_failure_after_the_probe_falls_back_mid_run(fresh_probe):
    """A specialisation the probe did not compile (per-class gamma) fails at launch."""
    launch = triton_dfl._launch

    def fails_on_per_class_grad(inputs, gamma, mode, upstream=None):
        if gamma.dim() and mode >= triton_dfl.KernelMode.GRAD:
            raise RuntimeError('simulated out of shared memory')
        return launch(inputs, gamma, mode, upstream)

    fresh_probe.setattr(triton_dfl, '_launch', fails_on_per_class_grad)
    z, labels = _seg_call()
    gamma = torch.linspace(1.0, 3.0, 4)

    def call():
        zz, g = z.detach().clone().requires_grad_(), gamma.clone().requires_grad_()
        out = dual_focal_loss(zz, labels, g, use_sigmoid=False, ignore_index=255)
        out.backward()
        return out.detach(), zz.grad, g.grad

    got, warned = _calls(call, 2)
    assert len(warned) == 1 and 'simulated out of shared memory' in str(warned[0].message)
    with ops.use('reference'):
        want = call()
    for result in got:
        for g, w in zip(result, want):
            torch.testing.assert_close(g, w, rtol=2e-4, atol=2e-5)


def test_the_probe_passes_on_the_real_kernels(fresh_probe):
    for sigmoid in (True, False):
        assert triton_dfl.probe(DEVICE, torch.float32, sigmoid) is None
        assert triton_dfl.probe(DEVICE, torch.bfloat16, sigmoid) is None


# --- 64-bit offsets -------------------------------------------------------------

if triton_dfl.available():
    import triton
    import triton.language as tl

    from dfl_mm.ops.triton_kernels import _tile

    @triton.jit
    def _tile_offsets_kernel(offs_ptr, rows_ptr, row_block, class_block, n_rows, C, S,
                             BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        offs, rows, cls, mask = _tile(row_block, class_block, n_rows, C, S, BLOCK_C, BLOCK_R)
        i = tl.arange(0, BLOCK_C)[:, None] * BLOCK_R + tl.arange(0, BLOCK_R)[None, :]
        tl.store(offs_ptr + i, offs)
        tl.store(rows_ptr + tl.arange(0, BLOCK_R), rows)


@pytest.mark.parametrize('classes,spatial,first_row,class_block', [
    (1203, 1, 55784 * 32, 0),  # LVIS (2M anchors x 1203 classes): rows * C crosses 2^31
    (1203, 1, 55784 * 32, 37),  # a far class tile of the same rows
    (19, 1 << 20, 107 << 20, 0),  # a dense map: b * C * S + c * S crosses 2^31
])
def test_tile_offsets_are_64_bit_past_2_31(classes, spatial, first_row, class_block):
    """The kernels' index arithmetic at element offsets just below and past 2^31."""
    block_c = block_r = 32
    row_block = first_row // block_r
    offs = torch.empty(block_c * block_r, dtype=torch.int64, device=DEVICE)
    rows = torch.empty(block_r, dtype=torch.int64, device=DEVICE)
    _tile_offsets_kernel[(1, )](offs, rows, row_block, class_block, 2**40, classes, spatial,
                                BLOCK_C=block_c, BLOCK_R=block_r)
    want_rows = row_block * block_r + torch.arange(block_r, dtype=torch.int64)
    cls = class_block * block_c + torch.arange(block_c, dtype=torch.int64)
    b, s = want_rows // spatial, want_rows % spatial
    want = (b * classes * spatial + s)[None, :] + cls[:, None] * spatial
    assert want.min() < 2**31 <= want.max()  # the case does cross 2^31
    assert torch.equal(rows.cpu(), want_rows)
    assert torch.equal(offs.cpu().view(block_c, block_r), want)
