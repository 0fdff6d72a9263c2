"""Draw the element loss and its gradient against p for CE, focal loss and DFL.

    python tools/analysis/plot_loss_shapes.py --out docs/loss_shapes.png [--gammas 0.5 1 2 5]

Binary (sigmoid) view of one class: p = sigmoid(z). For a true class (y = 1)
CE is -ln p, focal loss -(1-p)^g ln p, DFL -ln(1 - (1-p)^g); for a false
class (y = 0) the same with p and 1 - p swapped. Focal loss as used in
detection scores false classes too (through BCE); softmax CE does not. The
lower row shows |d loss / d z|, computed by autograd through each loss.
"""
import argparse

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dfl_mm import dual_focal_loss  # noqa: E402


def element_losses(z, target, gamma):
    """CE (BCE), focal and DFL element losses of logits ``z`` for a 0/1 target."""
    y = torch.full_like(z, float(target))
    bce = F.binary_cross_entropy_with_logits(z, y, reduction='none')
    p_t = torch.sigmoid(z) if target else torch.sigmoid(-z)
    focal = (1 - p_t).pow(gamma) * bce
    labels = torch.full((len(z), ), 0 if target else 1, dtype=torch.long)  # 1 = background
    dfl = dual_focal_loss(z[:, None], labels, gamma, reduction='none')[:, 0]
    return dict(CE=bce, focal=focal, DFL=dfl)


def plot(out, gammas):
    p = torch.linspace(1e-3, 1 - 1e-3, 400, dtype=torch.float64)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    styles = {'focal': '--', 'DFL': '-'}
    for col, target in enumerate((1, 0)):
        z = torch.logit(p).requires_grad_()
        curves = {'CE': element_losses(z, target, 1.0)['CE']}
        for g in gammas:
            losses = element_losses(z, target, g)
            curves[f'focal g={g:g}'] = losses['focal']
            curves[f'DFL g={g:g}'] = losses['DFL']
        for name, loss in curves.items():
            grad = torch.autograd.grad(loss.sum(), z, retain_graph=True)[0]
            style = styles.get(name.split()[0], ':')
            color = 'black' if name == 'CE' else None
            axes[0][col].plot(p, loss.detach(), style, label=name, color=color)
            axes[1][col].plot(p, grad.abs(), style, label=name, color=color)
        kind = 'true class (y = 1)' if target else 'false class (y = 0)'
        axes[0][col].set_title(f'element loss, {kind}')
        axes[1][col].set_title(f'|d loss / d logit|, {kind}')
        for row in (0, 1):
            axes[row][col].set_xlabel('p')
            axes[row][col].grid(alpha=0.3)
        axes[0][col].set_ylim(0, 5)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='loss_shapes.png')
    parser.add_argument('--gammas', type=float, nargs='+', default=[0.5, 2.0, 5.0])
    args = parser.parse_args(argv)
    print(plot(args.out, args.gammas))


if __name__ == '__main__':
    main()
