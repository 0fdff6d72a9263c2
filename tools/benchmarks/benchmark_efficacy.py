"""Does DFL deliver? Train DFL (with and without adaptive class weights) and
the stack's own imbalance tools on the demo detection and segmentation data
under the same budget and seeds, and write one table: the overall metric, the
rare classes' AP / IoU (mean ± sd over seeds, and the worst seed), how many
seeds learned every rare class (>= 50), and the wall time.

    python tools/benchmarks/benchmark_efficacy.py [--tasks det seg] [--losses ...]
        [--seeds ...] [--adaptive KEY=VALUE ...] [--det-epochs 24]
        [--seg-iters 1000] [--out docs/efficacy.md] [--work-dir DIR]
        [--threads 2] [--subset N] [--reuse] [--summarise-only]

The budgets are the demo configs' own; seeds default to 0-2 (det) and 0-4
(seg). ``--reuse`` keeps finished runs from WORK_DIR/records.json, so an
interrupted study or one with an added row only runs what is missing;
``--summarise-only`` writes the tables of the recorded runs without training.
``--adaptive`` sets ``adaptive_weight`` of every '+ weights' row (a sweep); the
row's name then shows the settings.

Each run is a real mmengine Runner on CPU (threads pinned with --threads).
Rows (the table ``ROWS``: a new peer is one line): CE = mmdet's sigmoid
CrossEntropyLoss (det) / mmseg's CrossEntropyLoss (seg); 'CE + weights' = softmax CE weighted per pixel by the very adaptive
weights of the DFL rows (dfl_mm.adaptive, same settings), averaged over
labelled pixels; OHEM = CE with mmseg's OHEMPixelSampler (thresh 0.7,
min_kept 10000 of the batch's 73728 pixels); 'CE + Dice' = mmseg's CE + DiceLoss
(softmax, weight 1 each); GHMC = mmdet's GHMC (configs/ghm settings, clip
35); focal = mmdet's FocalLoss (gamma 2, alpha 0.25) / torchvision's
sigmoid_focal_loss (gamma 2, alpha 0.25) over one-hot pixels, because mmseg
1.2.2's FocalLoss fails on CPU (its CPU path takes ``target[:, num_classes]``
where ``target[:, :num_classes]`` is meant); DFL gamma 2, fixed or learnable
(gamma_reg = the default), '+ weights' = ``class_weight='adaptive'``; 'DFL
sigmoid (alpha)' rows (sigmoid DFL without weights) are available but not run
by default. For segmentation each run also records each class's share of the
decode head's loss gradient over training (the gradient-share table).
"""
import argparse
import json
import os
import os.path as osp
import re
import statistics
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

DET_CONFIG = osp.join(ROOT, 'configs', 'demo', 'retinanet_r18_dfl_demo.py')
SEG_CONFIG = osp.join(ROOT, 'configs', 'demo', 'deeplabv3_r18_dfl_demo.py')
# The rows of the study: name -> (detection loss, segmentation loss), each a dict
# given to the config (None: the row does not exist for that task). In a
# segmentation loss LOSS_WEIGHT becomes the head's weight (1 decode, 0.4 auxiliary);
# ADAPTIVE marks a '+ weights' row, which gets class_weight='adaptive' at the defaults
# or at --adaptive settings ('CE + weights' applies the very same weights to CE).
# A new peer is one line.
LOSS_WEIGHT, ADAPTIVE = 'LOSS_WEIGHT', 'ADAPTIVE'
_CE = dict(type='CrossEntropyLoss', loss_weight=LOSS_WEIGHT, avg_non_ignore=True)


def _dfl(use_sigmoid=False, learnable=True, alpha=None, weights=False):
    det = dict(type='DualFocalLoss', use_sigmoid=True, gamma=2.0,
               learnable_gamma='scalar' if learnable else False)
    seg = dict(type='DualFocalLoss', use_sigmoid=use_sigmoid, gamma=2.0, avg_non_ignore=True,
               alpha=alpha, learnable_gamma='scalar' if learnable else False,
               loss_weight=LOSS_WEIGHT, loss_name='loss_dfl')
    if weights:
        det[ADAPTIVE] = seg[ADAPTIVE] = True
    return det, seg


ROWS = {
    'CE': (dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0), _CE),
    'CE + weights': (None, dict(type='AdaptiveWeightCrossEntropyLoss', num_classes=4,
                                loss_weight=LOSS_WEIGHT, adaptive_weight=ADAPTIVE)),
    'OHEM': (None, _CE),  # the sampler is set on the head (run_one)
    'CE + Dice': (None, [_CE, dict(type='DiceLoss', use_sigmoid=False,
                                   loss_weight=LOSS_WEIGHT)]),
    'GHMC': (dict(type='GHMC', bins=30, momentum=0.75, use_sigmoid=True, loss_weight=1.0),
             None),  # mmdet's configs/ghm settings
    'focal': (dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
              dict(type='PixelSigmoidFocalLoss', gamma=2.0, alpha=0.25,
                   loss_weight=LOSS_WEIGHT)),
    'DFL fixed': _dfl(learnable=False),
    'DFL learnable': _dfl(),
    'DFL + weights': _dfl(learnable=False, weights=True),
    'DFL learnable + weights': _dfl(weights=True),
    'DFL sigmoid + weights': (None, _dfl(use_sigmoid=True, weights=True)[1]),
    'DFL sigmoid': (None, _dfl(use_sigmoid=True)[1]),
    'DFL sigmoid alpha': (None, _dfl(use_sigmoid=True, alpha=0.25)[1]),
}
LOSSES = tuple(ROWS)
SEG_ONLY = tuple(name for name, (det, _) in ROWS.items() if det is None)
DET_ONLY = tuple(name for name, (_, seg) in ROWS.items() if seg is None)
DEFAULT_SEEDS = dict(det=[0, 1, 2], seg=[0, 1, 2, 3, 4])
LEARNED = 50.0  # a rare class counts as learned by a run at this IoU / AP (%)
# What a plain invocation runs: 'DFL sigmoid' / 'DFL sigmoid alpha' (no
# weights) were measured before (docs/results.md) and answer no question of this study.
DEFAULT_LOSSES = tuple(name for name in LOSSES if name not in ('DFL sigmoid', 'DFL sigmoid alpha'))


def _filled(template, loss_weight, args, num_classes=4):
    """A row's loss dict (or list of them) with its placeholders filled in."""
    if isinstance(template, list):
        return [_filled(t, loss_weight, args, num_classes) for t in template]
    loss = {k: loss_weight if v == LOSS_WEIGHT else v for k, v in template.items()}
    if loss.get('adaptive_weight') == ADAPTIVE:  # 'CE + weights': the settings themselves
        loss['adaptive_weight'] = dict(args.adaptive)
    if loss.pop(ADAPTIVE, False):
        loss.update(class_weight='adaptive', num_classes=num_classes,
                    adaptive_weight=dict(args.adaptive) or None)
    return loss


def det_loss(name, args):
    return _filled(ROWS[name][0], 1.0, args)


def seg_loss(name, loss_weight, args):
    return _filled(ROWS[name][1], loss_weight, args)


def register_study_losses():
    """The study's own mmseg decode-head losses: torchvision's sigmoid focal
    loss over one-hot pixels, and CE with the adaptive class weights."""
    import torch.nn.functional as F
    from mmseg.registry import MODELS
    from torchvision.ops import sigmoid_focal_loss

    if MODELS.get('PixelSigmoidFocalLoss') is not None:
        return

    @MODELS.register_module()
    class PixelSigmoidFocalLoss(torch.nn.Module):
        """Sigmoid focal loss over one-hot pixels, mean over non-ignored pixels."""

        def __init__(self, gamma=2.0, alpha=0.25, loss_weight=1.0, loss_name='loss_focal'):
            super().__init__()
            self.gamma, self.alpha, self.loss_weight = gamma, alpha, loss_weight
            self.loss_name = loss_name

        def forward(self, seg_logits, seg_label, weight=None, ignore_index=255, **kwargs):
            valid = seg_label != ignore_index
            onehot = F.one_hot(torch.where(valid, seg_label, 0), seg_logits.shape[1])
            loss = sigmoid_focal_loss(seg_logits, onehot.permute(0, 3, 1, 2).float(),
                                      alpha=self.alpha, gamma=self.gamma, reduction='none')
            per_pixel = loss.sum(dim=1) * valid
            return self.loss_weight * per_pixel.sum() / valid.sum().clamp(min=1)

    @MODELS.register_module()
    class AdaptiveWeightCrossEntropyLoss(torch.nn.Module):
        """Softmax CE weighted per pixel by DualFocalLoss's adaptive weights.

        The mean is over non-ignored pixels, as the DFL rows' (mmseg 1.2.2's
        CrossEntropyLoss with class_weight and 'mean' indexes its weights with
        label 255 and fails on any ignored pixel).
        """

        def __init__(self, num_classes, adaptive_weight=None, loss_weight=1.0,
                     loss_name='loss_ce'):
            from dfl_mm.adaptive import ADAPTIVE_DEFAULTS, AdaptiveClassWeight
            super().__init__()
            self.adaptive = AdaptiveClassWeight(
                num_classes, **{**ADAPTIVE_DEFAULTS, **(adaptive_weight or {})})
            self.loss_weight, self.loss_name = loss_weight, loss_name

        def forward(self, seg_logits, seg_label, weight=None, ignore_index=255, **kwargs):
            if self.training:
                self.adaptive.start_call()
            loss = F.cross_entropy(seg_logits, seg_label, weight=self.adaptive.weights(),
                                   ignore_index=ignore_index, reduction='none')
            valid = seg_label != ignore_index
            if self.training:
                self.adaptive.observe(seg_label[valid])
            return self.loss_weight * loss.sum() / valid.sum().clamp(min=1)


TASKS = {
    'det': dict(config=DET_CONFIG, metric='coco/bbox_mAP', scale=100.0,
                rare={'triangle AP': 'coco/triangle_precision',
                      'cross AP': 'coco/cross_precision'}),
    'seg': dict(config=SEG_CONFIG, metric='mIoU', scale=1.0,
                rare={'line IoU': 'IoU.line', 'dot IoU': 'IoU.dot'}),
}


def build_cfg(task, loss, seed, args, work_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(TASKS[task]['config'])
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.custom_hooks = [dict(type='DFLGammaHook')]
    if task == 'det':
        cfg.model.bbox_head.loss_cls = det_loss(loss, args)
        if loss == 'GHMC':  # as mmdet's configs/ghm
            cfg.optim_wrapper.clip_grad = dict(max_norm=35, norm_type=2)
        cfg.train_cfg.max_epochs = args.det_epochs
        cfg.train_cfg.val_interval = args.det_epochs
        milestones = [int(args.det_epochs * 0.75), int(args.det_epochs * 0.92)]
        cfg.param_scheduler[1].milestones = milestones
        cfg.param_scheduler[1].end = args.det_epochs
    else:
        cfg.model.decode_head.loss_decode = seg_loss(loss, 1.0, args)
        cfg.model.auxiliary_head.loss_decode = seg_loss(loss, 0.4, args)
        if loss == 'OHEM':  # mmseg's OHEM configs: thresh 0.7; min_kept scaled to 8 x 96 x 96
            cfg.model.decode_head.sampler = dict(type='OHEMPixelSampler', thresh=0.7,
                                                 min_kept=10000)
        cfg.train_cfg.max_iters = args.seg_iters
        cfg.train_cfg.val_interval = args.seg_iters
        cfg.param_scheduler[0].end = args.seg_iters
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**9,
                                        save_last=False)
    if args.subset:
        cfg.train_dataloader.dataset.indices = args.subset
        cfg.val_dataloader.dataset.indices = max(4, args.subset // 2)
    return cfg


def row_name(loss, args):
    """The row's name: the loss, plus any --adaptive settings of a '+ weights' row."""
    if not (loss.endswith('+ weights') and args.adaptive):
        return loss
    return loss + ' [' + ', '.join(f'{k}={v}' for k, v in args.adaptive) + ']'


def run_one(task, loss, seed, args):
    from dfl_mm.launch import build_runner
    name = row_name(loss, args)
    work_dir = osp.join(args.work_dir, task, re.sub(r'[^\w.=-]+', '_', name), f'seed{seed}')
    cfg = build_cfg(task, loss, seed, args, work_dir)
    start = time.perf_counter()
    runner = build_runner(cfg)  # a fresh visualizer: each run logs into its own work dir
    share = GradientShare(runner.model.decode_head) if task == 'seg' else None
    model = runner.train()
    seconds = time.perf_counter() - start
    metrics = runner.val_loop.run()
    from dfl_mm import gamma_scalars
    scalars = gamma_scalars(model)
    gamma = scalars.get('gamma', scalars.get('gamma.decode_head.decode'))
    record = dict(task=task, loss=name, seed=seed, budget=budget(task, args),
                  seconds=seconds, gamma=gamma, threads=args.threads,
                  metrics={k: float(v) for k, v in metrics.items()})
    if share is not None and share.shares:
        record['grad_share'] = share.shares
    return record


class GradientShare:
    """Each class's share of the decode head's loss gradient, per window of
    iterations: sum over the pixels of class c of |d loss / d logits| (summed
    over channels), over the sum on all labelled pixels.

    ``shares`` maps the window's last iteration to the (C,) shares.
    """

    WINDOW = 50

    def __init__(self, head):
        self.shares, self._sum, self._calls = {}, None, 0
        losses = head.loss_decode
        if isinstance(losses, torch.nn.ModuleList):
            losses = losses[0]
        self.num_classes = head.num_classes
        self.ignore_index = head.ignore_index
        losses.register_forward_pre_hook(self._watch)

    def _watch(self, module, args):
        pred, labels = args[0], args[1]
        if not (module.training and pred.requires_grad):
            return
        valid = labels != self.ignore_index
        index = labels[valid]

        def record(grad):
            per_pixel = grad.detach().abs().sum(dim=1)[valid].double()
            sums = torch.bincount(index, per_pixel, minlength=self.num_classes)
            self._sum = sums if self._sum is None else self._sum + sums
            self._calls += 1
            if self._calls % self.WINDOW == 0:
                self.shares[self._calls] = (self._sum / self._sum.sum()).tolist()
                self._sum = None

        pred.register_hook(record)


def budget(task, args):
    return f'{args.det_epochs} epochs' if task == 'det' else f'{args.seg_iters} iterations'


def _key(record):
    return record['task'], record['loss'], record['seed'], record.get('budget')


def write_records(path, records, previous):
    """Save this study's runs, keeping earlier runs that it did not redo."""
    keys = {_key(r) for r in records}
    with open(path, 'w') as f:
        json.dump(records + [r for r in previous if _key(r) not in keys], f, indent=1)


def _order(name):
    base = name.split(' [')[0]
    return (LOSSES.index(base) if base in LOSSES else len(LOSSES)), name


def summarise(records, tasks):
    """Markdown tables: mean ± sd over seeds, and the worst seed of each rare class."""
    def stat(values):
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f'{mean:.1f} ± {sd:.1f}'

    lines = []
    for task in tasks:
        spec = TASKS[task]
        rows = [r for r in records if r['task'] == task]
        if not rows:
            continue
        metric_name = 'bbox mAP' if task == 'det' else 'mIoU'
        rare = list(spec['rare'])
        lines.append(f'\n**{task}** (seeds {sorted({r["seed"] for r in rows})}; AP and IoU '
                     'in %, mean ± sd; worst = the lowest seed; learned = seeds with every '
                     f'rare class >= {LEARNED})\n')
        lines.append(f'| loss | {metric_name} | ' + ' | '.join(rare) + ' | ' +
                     ' | '.join(f'worst {name}' for name in rare) +
                     ' | learned | final gamma (decode head) | time / run (s) |')
        lines.append('|---|' + '---:|' * (2 * len(rare) + 4))
        for loss in sorted({r['loss'] for r in rows}, key=_order):
            runs = [r for r in rows if r['loss'] == loss]

            def values(key):
                return [r['metrics'].get(key, float('nan')) * spec['scale'] for r in runs]

            cells = [stat(values(spec['metric']))]
            cells += [stat(values(key)) for key in spec['rare'].values()]
            cells += [f'{min(values(key)):.1f}' for key in spec['rare'].values()]
            learned = sum(all(r['metrics'].get(key, 0) * spec['scale'] >= LEARNED
                              for key in spec['rare'].values()) for r in runs)
            cells.append(f'{learned}/{len(runs)}')
            gammas = [r['gamma'] for r in runs if r['gamma'] is not None]
            cells.append(f'{statistics.mean(gammas):.2f}' if gammas else '-')
            cells.append(f"{statistics.mean(r['seconds'] for r in runs):.0f}")
            lines.append(f'| {loss} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


SHARE_ROWS = ('DFL fixed', 'DFL + weights', 'DFL learnable + weights', 'CE + weights')
SHARE_AT = (50, 250, 500, 1000)


def summarise_gradient_share(records):
    """Per seed: the rare classes' share of the decode head's gradient over training."""
    spec = TASKS['seg']
    rows = [r for r in records if r['task'] == 'seg' and r['loss'] in SHARE_ROWS
            and r.get('grad_share')]
    if not rows:
        return ''
    from dfl_mm.demo.segmentation import CLASSES
    rare = [CLASSES.index(name.split()[0]) for name in spec['rare']]  # 'line IoU' -> 2
    lines = ['\n\n**Rare classes\' share of the gradient** (seg, decode head: line + dot '
             "pixels' share of |d loss / d logits|, mean over the 50 iterations ending at "
             'each column; rare pixels are 3.3 % of the labelled ones; IoU in %)\n',
             '| loss | seed | ' + ' | '.join(f'iter {i}' for i in SHARE_AT) +
             ' | line / dot IoU at the end |',
             '|---|---:|' + '---:|' * len(SHARE_AT) + '---|']
    for r in sorted(rows, key=lambda r: (_order(r['loss']), r['seed'])):
        shares = r['grad_share']
        cells = []
        for it in SHARE_AT:
            share = shares.get(str(it))
            cells.append('-' if share is None else f'{100 * sum(share[c] for c in rare):.1f} %')
        ious = ' / '.join(f"{r['metrics'].get(key, float('nan')):.1f}"
                          for key in spec['rare'].values())
        lines.append(f"| {r['loss']} | {r['seed']} | " + ' | '.join(cells) + f' | {ious} |')
    return '\n'.join(lines)


def _setting(text):
    """KEY=VALUE of --adaptive, the value as a number where it is one."""
    key, sep, value = text.partition('=')
    if not sep:
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key, float(value)
    except ValueError:
        return key, value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', nargs='+', choices=list(TASKS), default=list(TASKS))
    parser.add_argument('--losses', nargs='+', choices=LOSSES, default=list(DEFAULT_LOSSES))
    parser.add_argument('--seeds', type=int, nargs='+',
                        help='default: 0-2 for det, 0-4 for seg')
    parser.add_argument('--adaptive', type=_setting, nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help="adaptive_weight settings of the '+ weights' rows (e.g. "
                        'power=1 apply_to=element); the row name shows them')
    parser.add_argument('--det-epochs', type=int, default=24)
    parser.add_argument('--seg-iters', type=int, default=1000)
    parser.add_argument('--subset', type=int, help='train on the first N images only')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--work-dir', default='work_dirs/efficacy')
    parser.add_argument('--out', default='efficacy.md', help='markdown table to write')
    parser.add_argument('--summarise-only', action='store_true',
                        help='train nothing: write the tables of every run in '
                        'WORK_DIR/records.json at the given budgets')
    parser.add_argument('--reuse', action='store_true',
                        help='take the runs already in WORK_DIR/records.json (same task, '
                        'loss, seed and budget) instead of training them again')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import dfl_mm  # noqa: F401
    import dfl_mm.demo.detection  # noqa: F401
    import dfl_mm.demo.segmentation  # noqa: F401
    register_study_losses()

    study_start = time.perf_counter()
    records_file = osp.join(args.work_dir, 'records.json')
    previous = []  # runs of earlier studies: kept in the file, reused with --reuse
    if osp.isfile(records_file):
        with open(records_file) as f:
            previous = json.load(f)
    os.makedirs(args.work_dir, exist_ok=True)
    records = []
    if args.summarise_only:
        records = [r for r in previous if r['task'] in args.tasks
                   and r.get('budget') == budget(r['task'], args)]
    for task in ([] if args.summarise_only else args.tasks):
        for loss in args.losses:
            if (loss in SEG_ONLY and task != 'seg') or (loss in DET_ONLY and task != 'det'):
                continue
            for seed in args.seeds or DEFAULT_SEEDS[task]:
                key = (task, row_name(loss, args), seed, budget(task, args))
                done = [r for r in previous if _key(r) == key] if args.reuse else []
                records.append(done[0] if done else run_one(task, loss, seed, args))
                write_records(records_file, records, previous)
    total = time.perf_counter() - study_start
    table = summarise(records, args.tasks) + summarise_gradient_share(records)
    train_minutes = sum(r['seconds'] for r in records) / 60
    threads = sorted({r.get('threads', args.threads) for r in records})
    header = (f'Efficacy study: {len(records)} runs, {train_minutes:.1f} min of training '
              f"on CPU ({'/'.join(map(str, threads))} thread(s) per run; this invocation took "
              f'{total / 60:.1f} min); det {args.det_epochs} epochs, seg {args.seg_iters} '
              'iterations per run'
              + (f'; adaptive weights: {dict(args.adaptive)}' if args.adaptive else '') + '.\n')
    with open(args.out, 'w') as f:
        f.write(header + table + '\n')
    print(header + table)
    return records


if __name__ == '__main__':
    main()
