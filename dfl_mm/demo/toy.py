"""A toy class-imbalanced problem to study the learnable exponent."""
from typing import Dict, List

import torch

from ..models.loss import DualFocalLoss

CLASS_COUNTS = (900, 80, 20)  # 90 / 8 / 2 %
CENTERS = ((0.0, 0.0), (1.5, 1.5), (-1.5, 1.5))


def make_toy_data(seed: int = 0, counts=CLASS_COUNTS):
    """Gaussian blobs, one per class, with imbalanced counts.

    Returns:
        tuple[Tensor, Tensor]: features (N, 2) and labels (N,).
    """
    gen = torch.Generator().manual_seed(seed)
    centers = torch.tensor(CENTERS[:len(counts)])
    x = torch.cat([centers[c] + torch.randn(n, 2, generator=gen) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n, ), c) for c, n in enumerate(counts)])
    return x, y


def balanced_accuracy(logits, labels) -> float:
    """Mean per-class recall."""
    pred = logits.argmax(dim=1)
    recalls = [(pred[labels == c] == c).float().mean() for c in labels.unique()]
    return float(torch.stack(recalls).mean())


def train_toy(gamma_reg: float, steps: int = 2000, seed: int = 0, lr: float = 0.1,
              gamma: float = 2.0, gamma_min: float = 0.5,
              gamma_max: float = 10.0) -> Dict[str, List[float]]:
    """Train a linear softmax classifier with a learnable DFL exponent.

    Returns:
        dict: ``gamma`` per step, and the final ``balanced_accuracy`` on a
        fresh draw of the same distribution.
    """
    x, y = make_toy_data(seed)
    torch.manual_seed(seed)
    model = torch.nn.Linear(2, len(CLASS_COUNTS))
    loss = DualFocalLoss(use_sigmoid=False, learnable_gamma='scalar', gamma=gamma,
                         gamma_min=gamma_min, gamma_max=gamma_max, gamma_reg=gamma_reg)
    opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=lr)
    trace = []
    for _ in range(steps):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
        trace.append(float(loss.gamma))
    x_test, y_test = make_toy_data(seed + 1000)
    with torch.no_grad():
        accuracy = balanced_accuracy(model(x_test), y_test)
    return dict(gamma=trace, balanced_accuracy=[accuracy])
