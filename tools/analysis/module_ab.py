"""Behaviour A/B of two checkouts: 14 DualFocalLoss configurations (mmdet / mmseg,
adaptive weights, alpha, flattened weights, fixed / learnable / per-class gamma, binary,
static weights), 3 training calls each; prints a hash of the losses, the gradients on the
logits and gamma and every buffer, per configuration and in all. Equal hashes: the same
behaviour bit for bit.

    python tools/analysis/module_ab.py CHECKOUT_A; python tools/analysis/module_ab.py CHECKOUT_B
"""
import hashlib
import sys

import torch

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else '.')
from dfl_mm import DualFocalLoss  # noqa: E402

C = 5
ADAPTIVE = dict(class_weight='adaptive', num_classes=C)
CASES = {
    'det': dict(use_sigmoid=True),
    'det-adaptive': dict(use_sigmoid=True, **ADAPTIVE),
    'det-alpha': dict(use_sigmoid=True, alpha=0.25),
    'det-learnable': dict(use_sigmoid=True, learnable_gamma='scalar'),
    'det-perclass': dict(use_sigmoid=True, learnable_gamma='per_class', num_classes=C),
    'det-adaptive-learnable': dict(use_sigmoid=True, learnable_gamma='scalar', **ADAPTIVE),
    'det-flat-weights': dict(use_sigmoid=True),
    'det-element': dict(use_sigmoid=True, adaptive_weight=dict(apply_to='element'), **ADAPTIVE),
    'seg': dict(use_sigmoid=False, avg_non_ignore=True),
    'seg-adaptive': dict(use_sigmoid=False, avg_non_ignore=True, **ADAPTIVE),
    'seg-learnable-adaptive': dict(use_sigmoid=False, learnable_gamma='scalar',
                                   avg_non_ignore=True, **ADAPTIVE),
    'seg-binary': dict(use_sigmoid=True),
    'seg-recall': dict(use_sigmoid=False, adaptive_weight=dict(basis='recall'), **ADAPTIVE),
    'seg-static': dict(use_sigmoid=False, class_weight=[0.5, 1, 2, 1, 3]),
}
h = hashlib.sha256()
for name, kw in CASES.items():
    torch.manual_seed(0)
    loss = DualFocalLoss(**kw).train()
    for step in range(3):
        if name.startswith('seg'):
            channels = 1 if name == 'seg-binary' else C
            z = torch.randn(2, channels, 6, 7, requires_grad=True)
            t = torch.randint(0, 2 if channels == 1 else C, (2, 6, 7))
            t[0, 0] = 255
            out = loss(z, t, ignore_index=255)
        else:
            z = torch.randn(40, C, requires_grad=True)
            t = torch.randint(0, C + 1, (40,))
            w = torch.rand(40 * C) if name == 'det-flat-weights' else torch.rand(40)
            out = loss(z, t, weight=w, avg_factor=7.0)
        params = [p for p in loss.parameters()]
        grads = torch.autograd.grad(out, [z] + params)
        for x in [out, *grads, *[b for b in loss.buffers() if b is not None]]:
            h.update(x.detach().double().contiguous().numpy().tobytes())
    print(name, h.hexdigest()[:16])
print('ALL', h.hexdigest())
