"""The Triton kernels against the reference PyTorch core.

Without a GPU they run in Triton's interpreter (TRITON_INTERPRET=1, set by
conftest.py); with one, the same tests run the compiled kernels on CUDA.
"""
import warnings

import pytest
import torch

from dfl_mm import backends, triton_dfl
from dfl_mm.functional import dual_focal_loss
from dfl_mm.inputs import LossInputs

pytestmark = pytest.mark.skipif(not triton_dfl.available(), reason='triton is not installed')
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def _run(monkeypatch, use_triton, z, labels, gamma, **kwargs):
    monkeypatch.setenv('DFL_MM_TRITON', '1' if use_triton else '0')
    launches = []
    launch = triton_dfl._launch

    def counted(inputs, *args, **kwargs):  # this call's launches, not the probe's
        if inputs.logits.numel() == z.numel():
            launches.append(int(args[1]))
        return launch(inputs, *args, **kwargs)

    monkeypatch.setattr(triton_dfl, '_launch', counted)
    z = z.detach().clone().requires_grad_()
    gamma = gamma.detach().clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # interpreter: masked lanes
        out = dual_focal_loss(z, labels, gamma, **kwargs)
        upstream = torch.rand_like(out) if out.dim() else torch.tensor(1.7)
        (out * upstream).sum().backward()
    assert sorted(launches) == ([1 - (out.dim() == 0), 2] if use_triton else [])
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
        return backends.select(inputs, gamma, True) is triton_dfl

    monkeypatch.setenv('DFL_MM_TRITON', '0')
    assert not chosen()
    monkeypatch.setenv('DFL_MM_TRITON', 'auto')
    assert chosen() == (DEVICE == 'cuda')
    monkeypatch.setenv('DFL_MM_TRITON', '1')
    assert chosen()
    soft = LossInputs(logits, torch.zeros(1, 2, 1, device=DEVICE))
    assert backends.select(soft, gamma, True) is not triton_dfl  # soft targets: the core
    monkeypatch.setenv('DFL_MM_TRITON', 'yes')
    with pytest.raises(ValueError, match="DFL_MM_TRITON must be 'auto', '0' or '1', got 'yes'"):
        chosen()
