"""Plot gamma (and the training losses) over iterations from mmengine work dirs.

    python tools/analysis/plot_gamma.py WORK_DIR [WORK_DIR ...] --out gamma.png
        [--labels A B ...] [--no-losses]

Reads ``<work_dir>/<timestamp>/vis_data/scalars.json`` (the newest run of each
work dir), as written by DFLStepHook and mmengine's logger. A per-class gamma
is drawn as its mean with a min-max band. The output format follows the file
extension (.png, .svg, .pdf).
"""
import argparse
import glob
import json
import os.path as osp
from collections import defaultdict

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def read_scalars(work_dir: str):
    """Series ``{key: ([iters], [values])}`` of the newest run in ``work_dir``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        if osp.isfile(work_dir) and work_dir.endswith('.json'):
            files = [work_dir]
        else:
            raise SystemExit(f'no */vis_data/scalars.json under {work_dir}: is it an '
                             'mmengine work dir?')
    series = defaultdict(lambda: ([], []))
    with open(files[-1]) as f:
        for line in f:
            entry = json.loads(line)
            step = entry.get('iter', entry.get('step'))
            if step is None:
                continue
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key not in ('iter', 'step', 'epoch'):
                    series[key][0].append(step)
                    series[key][1].append(value)
    return dict(series)


def gamma_keys(series):
    return sorted(k for k in series if k.startswith('gamma') and
                  not k.startswith(('gamma_min', 'gamma_max', 'gamma_pull')))


def plot(work_dirs, labels, out, with_losses=True):
    runs = [(label, read_scalars(d)) for d, label in zip(work_dirs, labels)]
    if not any(gamma_keys(s) for _, s in runs):
        raise SystemExit('no gamma in these logs: add custom_hooks=[dict(type="DFLStepHook")]')
    rows = 2 if with_losses else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7, 3.2 * rows), squeeze=False)
    ax = axes[0][0]
    for label, series in runs:
        for key in gamma_keys(series):
            name = f'{label} {key}'.strip()
            steps, values = series[key]
            (line, ) = ax.plot(steps, values, label=name)
            suffix = key[len('gamma'):]
            low, high = series.get('gamma_min' + suffix), series.get('gamma_max' + suffix)
            if low and high:
                ax.fill_between(low[0], low[1], high[1], color=line.get_color(), alpha=0.2)
    ax.set_xlabel('iteration')
    ax.set_ylabel('gamma')
    ax.set_title('Focusing exponent (band: per-class min-max)')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if with_losses:
        ax = axes[1][0]
        for label, series in runs:
            for key in sorted(k for k in series if 'loss' in k):
                ax.plot(*series[key], label=f'{label} {key}'.strip())
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss')
        ax.set_yscale('log')
        ax.set_title('Training losses')
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--out', default='gamma.png')
    parser.add_argument('--labels', nargs='+')
    parser.add_argument('--no-losses', action='store_true')
    args = parser.parse_args(argv)
    labels = args.labels or ([''] if len(args.work_dirs) == 1 else
                             [osp.basename(osp.normpath(d)) for d in args.work_dirs])
    if len(labels) != len(args.work_dirs):
        parser.error(f'--labels needs {len(args.work_dirs)} names, got {len(labels)}')
    print(plot(args.work_dirs, labels, args.out, not args.no_losses))


if __name__ == '__main__':
    main()
