"""Measure how the pull strength gamma_reg shapes a learnable gamma.

    python tools/analysis/sweep_gamma_reg.py [--steps 2000] [--seeds 0 1 2]

Trains a linear classifier with softmax DFL on a toy 90/8/2 % problem for each
gamma_reg and prints the final gamma and the balanced accuracy (mean and
spread over seeds). The default of DualFocalLoss comes from this table.
"""
import argparse
import statistics

import torch

from dfl_mm.demo.toy import train_toy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--regs', type=float, nargs='+',
                        default=[0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print('| gamma_reg | final gamma (mean +- sd) | max gamma | balanced acc (mean +- sd) |')
    print('|---|---|---|---|')
    for reg in args.regs:
        runs = [train_toy(reg, steps=args.steps, seed=s) for s in args.seeds]
        finals = [r['gamma'][-1] for r in runs]
        peaks = [max(r['gamma']) for r in runs]
        accs = [r['balanced_accuracy'][0] for r in runs]
        sd = statistics.pstdev
        print(f'| {reg:g} | {statistics.mean(finals):.2f} +- {sd(finals):.2f} | '
              f'{max(peaks):.2f} | {statistics.mean(accs):.3f} +- {sd(accs):.3f} |')


if __name__ == '__main__':
    main()
