"""Writes tests/data/dfl_soft_golden.json: golden values of the Dual Focal Loss for
soft (quality) targets, sigmoid mode, computed at 60 digits with mpmath.

    python tests/helpers/soft_golden.py

Each case: logits z (C,), a float target y (C,) in [0, 1] (an IoU-like score at one
class, 0 elsewhere, and some exact 0 / 1 entries), gamma; per class
l = -ln(1 - |y - sigmoid(z)|^gamma), their sum, d sum / d z and d sum / d gamma.
"""
import json
import random
from pathlib import Path

import mpmath as mp

mp.mp.dps = 60
OUT = Path(__file__).resolve().parents[1] / 'data' / 'dfl_soft_golden.json'


def element(z, y, gamma):
    e = abs(y - 1 / (1 + mp.exp(-z)))
    return -mp.log(1 - e ** gamma)


def case(rng, classes, gamma, scale):
    z = [round(rng.uniform(-scale, scale), 4) for _ in range(classes)]
    y = [0.0] * classes
    y[rng.randrange(classes)] = round(rng.uniform(0.05, 0.95), 4)
    if classes > 2:
        y[(classes - 1)] = rng.choice([0.0, 1.0])
    zs, ys, g = [mp.mpf(v) for v in z], [mp.mpf(v) for v in y], mp.mpf(gamma)
    losses = [element(a, b, g) for a, b in zip(zs, ys)]
    grad_z = [mp.diff(lambda t, b=b: element(t, b, g), a) for a, b in zip(zs, ys)]
    grad_gamma = mp.diff(lambda t: mp.fsum(element(a, b, t) for a, b in zip(zs, ys)), g)
    return dict(logits=z, target=y, gamma=gamma, loss_per_class=[float(v) for v in losses],
                loss_sum=float(mp.fsum(losses)), grad_logits=[float(v) for v in grad_z],
                grad_gamma=float(grad_gamma))


def main():
    rng = random.Random(0)
    cases = [case(rng, classes, gamma, scale) for classes in (1, 3, 5)
             for gamma in (0.5, 1.0, 2.0, 4.5) for scale in (0.5, 4.0, 12.0)]
    OUT.write_text(json.dumps(dict(
        about='Dual Focal Loss golden values for soft targets (sigmoid mode): l = '
              '-ln(1 - |y - sigmoid(z)|^gamma) per class, y a float target in [0, 1]; '
              'grad_logits and grad_gamma are derivatives of loss_sum. Computed at 60 '
              'digits (tests/helpers/soft_golden.py).', cases=cases), indent=1) + '\n')


if __name__ == '__main__':
    main()
