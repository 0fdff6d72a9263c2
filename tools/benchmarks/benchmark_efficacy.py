"""Does DFL deliver? Train DFL (with and without adaptive class weights) and
its peers on the demo detection and segmentation data (the 4-class demos
``det``/``seg`` and the long-tail demos ``det-lt``/``seg-lt``) under the same
budget and seeds, and write one table per task and budget: the overall metric
and the rare classes' AP / IoU (4-class: how many seeds learned every rare
class, >= 50) or the head and tail halves (long tail), mean ± sd over seeds
and the worst seed, and the wall time. ``tools/benchmarks/efficacy_study.sh``
runs the whole study.

    python tools/benchmarks/benchmark_efficacy.py [--tasks det seg det-lt seg-lt rtmdet rtmdet-lt]
        [--losses ...]
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
CrossEntropyLoss (det) / mmseg's CrossEntropyLoss (seg); 'CE + weights' = softmax CE
weighted per pixel by the very adaptive weights of the DFL rows
(dfl_mm.models.adaptive, same settings), averaged over labelled pixels; OHEM = CE with mmseg's
OHEMPixelSampler (thresh 0.7,
min_kept 10000 of the batch's 73728 pixels); 'CE + Dice' = mmseg's CE + DiceLoss
(softmax, weight 1 each); GHMC = mmdet's GHMC (configs/ghm settings, clip
35); EFL = the Equalized Focal Loss (``study_losses.py``); QFL = mmdet's QualityFocalLoss
(beta 2: the rtmdet tasks, where the DFL rows take its soft targets); 'DFL
Neurocomputing 2021' = ``form='neurocomputing2021'`` at its defaults (seg); 'CE + Lovasz' = mmseg's
CE + LovaszLoss (weight 1 each); focal = mmdet's FocalLoss (gamma 2, alpha 0.25) / torchvision's
sigmoid_focal_loss (gamma 2, alpha 0.25) over one-hot pixels, because mmseg
1.2.2's FocalLoss fails on CPU (its CPU path takes ``target[:, num_classes]``
where ``target[:, :num_classes]`` is meant); DFL gamma 2, fixed or learnable
(gamma_reg = the default), '+ weights' = ``class_weight='adaptive'``
('+ effective' / '+ recall': that basis, power 1); 'DFL
sigmoid (alpha)' rows (sigmoid DFL without weights) are available but not run
by default. For segmentation each run also records each class's share of the
decode head's loss gradient over training (the gradient-share table).
"""
import argparse
import glob
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
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import study_losses  # noqa: E402  (the peers mmdet / mmseg lack; tools/benchmarks/)

DEMO = osp.join(ROOT, 'configs', 'demo')
# The rows of the study: name -> (detection loss, segmentation loss), each a dict
# given to the config (None: the row does not exist for that task). In a
# segmentation loss LOSS_WEIGHT becomes the head's weight (1 decode, 0.4 auxiliary);
# NUM_CLASSES the task's number of classes; ADAPTIVE marks a '+ weights' row, which
# gets class_weight='adaptive' at the defaults updated by the row's own settings (a
# dict) and by --adaptive ('CE + weights' applies the very same weights to CE).
# A new peer is one line.
LOSS_WEIGHT, ADAPTIVE, NUM_CLASSES = 'LOSS_WEIGHT', 'ADAPTIVE', 'NUM_CLASSES'
_CE = dict(type='CrossEntropyLoss', loss_weight=LOSS_WEIGHT, avg_non_ignore=True)


def _dfl(use_sigmoid=False, learnable=True, alpha=None, weights=None, gamma=2.0):
    det = dict(type='DualFocalLoss', use_sigmoid=True, gamma=gamma,
               learnable_gamma='scalar' if learnable else False)
    if alpha is not None:
        det['alpha'] = alpha
    seg = dict(type='DualFocalLoss', use_sigmoid=use_sigmoid, gamma=2.0, avg_non_ignore=True,
               alpha=alpha, learnable_gamma='scalar' if learnable else False,
               loss_weight=LOSS_WEIGHT, loss_name='loss_dfl')
    if weights is not None:
        det[ADAPTIVE] = seg[ADAPTIVE] = weights
    return det, seg


ROWS = {
    'CE': (dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0), _CE),
    'CE + weights': (None, dict(type='AdaptiveWeightCrossEntropyLoss', num_classes=NUM_CLASSES,
                                loss_weight=LOSS_WEIGHT, adaptive_weight=ADAPTIVE)),
    'OHEM': (None, _CE),  # the sampler is set on the head (run_one)
    'CE + Dice': (None, [_CE, dict(type='DiceLoss', use_sigmoid=False,
                                   loss_weight=LOSS_WEIGHT)]),
    'CE + Lovasz': (None, [_CE, dict(type='LovaszLoss', loss_type='multi_class',
                                     per_image=False, reduction='none',
                                     loss_weight=LOSS_WEIGHT)]),
    'GHMC': (dict(type='GHMC', bins=30, momentum=0.75, use_sigmoid=True, loss_weight=1.0),
             None),  # mmdet's configs/ghm settings
    'focal': (dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
              dict(type='PixelSigmoidFocalLoss', gamma=2.0, alpha=0.25,
                   loss_weight=LOSS_WEIGHT)),
    # RTMDet's own loss (the rtmdet tasks: a quality head's soft targets)
    'QFL': (dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0), None),
    'EFL': (dict(type='EqualizedFocalLoss', use_sigmoid=True, num_classes=NUM_CLASSES,
                 loss_weight=1.0), None),
    'DFL fixed': _dfl(learnable=False),
    'DFL learnable': _dfl(),
    'focal + positive weights': (dict(type='AdaptiveWeightFocalLoss', use_sigmoid=True,
                                      loss_weight=1.0, **{ADAPTIVE: dict(
                                          normalise='head', apply_to='positive')}),
                                 None),
    'DFL + weights': _dfl(learnable=False, weights={}),
    # issue 34: the exponent against the flood of easy negatives, with and without weights
    'DFL gamma 3': _dfl(learnable=False, gamma=3.0),
    'DFL gamma 3 + weights': _dfl(learnable=False, weights={}, gamma=3.0),
    'DFL learnable from 3': _dfl(gamma=3.0),
    'DFL learnable from 3 + weights': _dfl(weights={}, gamma=3.0),
    # the flood of easy negatives weighed down against the positives (FocalLoss's alpha
    # 0.25 balances an exponent that silences them far more)
    'DFL alpha 0.75': (_dfl(learnable=False, alpha=0.75)[0], None),
    # on the shapes tail DFL beats FocalLoss at IoU 0.5 and trails it at 0.75 (issue 34):
    # the classification loss outweighing the box loss? alpha 0.5 halves it whole, alpha
    # 0.25 is FocalLoss's balance; gamma 1.5 continues the trend of gamma 3 < learnable < 2
    'DFL alpha 0.5': (_dfl(learnable=False, alpha=0.5)[0], None),
    'DFL alpha 0.25': (_dfl(learnable=False, alpha=0.25)[0], None),
    'DFL gamma 1.5': (_dfl(learnable=False, gamma=1.5)[0], None),
    # the product's two other features on top of that balance
    'DFL alpha 0.25 learnable': (_dfl(alpha=0.25)[0], None),
    'DFL alpha 0.25 + weights': (_dfl(learnable=False, alpha=0.25, weights={})[0], None),
    # issue 27: weights that boost the tail without taxing the head
    'DFL + head weights': _dfl(learnable=False, weights=dict(normalise='head')),
    'DFL + positive weights': _dfl(learnable=False, weights=dict(normalise='head',
                                                                 apply_to='positive')),
    'DFL + positive weights + class gamma': _dfl(learnable=False, weights=dict(
        normalise='head', apply_to='positive', gamma_scale=2.0)),
    'DFL learnable + weights': _dfl(weights={}),
    'DFL learnable + effective': _dfl(weights=dict(basis='effective', power=1.0)),
    'DFL learnable + recall': _dfl(weights=dict(basis='recall', power=1.0)),
    # the authors' peer-reviewed form (alpha = beta = rho = 1, gamma 2), no weights
    'DFL Neurocomputing 2021': (None, dict(_dfl(learnable=False)[1],
                                           type='NeurocomputingDualFocalLoss')),
    'Balanced Softmax CE': (None, dict(type='BalancedSoftmaxCrossEntropyLoss',
                                       num_classes=NUM_CLASSES, loss_weight=LOSS_WEIGHT)),
    'Poly-1': (None, dict(type='Poly1CrossEntropyLoss', loss_weight=LOSS_WEIGHT)),
    'DFL sigmoid + weights': (None, _dfl(use_sigmoid=True, weights={})[1]),
    'DFL sigmoid': (None, _dfl(use_sigmoid=True)[1]),
    'DFL sigmoid alpha': (None, _dfl(use_sigmoid=True, alpha=0.25)[1]),
}
LOSSES = tuple(ROWS)
SEG_ONLY = tuple(name for name, (det, _) in ROWS.items() if det is None)
DET_ONLY = tuple(name for name, (_, seg) in ROWS.items() if seg is None)
LEARNED = 50.0  # a rare class counts as learned by a run at this IoU / AP (%)
# What a plain invocation runs: rows measured before (docs/efficacy.md) that
# answer no question of this study are left out: 'DFL sigmoid' / 'DFL sigmoid
# alpha' (no weights), OHEM and CE + Dice (0 IoU on both rare classes on every
# seed of the 4-class demo).
DEFAULT_LOSSES = tuple(name for name in LOSSES if name not in (
    'DFL sigmoid', 'DFL sigmoid alpha', 'OHEM', 'CE + Dice'))


def _filled(template, loss_weight, args, num_classes):
    """A row's loss dict (or list of them) with its placeholders filled in."""
    if isinstance(template, list):
        return [_filled(t, loss_weight, args, num_classes) for t in template]
    fill = {LOSS_WEIGHT: loss_weight, NUM_CLASSES: num_classes}
    loss = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in template.items()}
    if loss.get('adaptive_weight') == ADAPTIVE:  # 'CE + weights': the settings themselves
        loss['adaptive_weight'] = dict(args.adaptive)
    settings = loss.pop(ADAPTIVE, None)
    if settings is not None:
        loss.update(class_weight='adaptive', num_classes=num_classes,
                    adaptive_weight={**settings, **dict(args.adaptive)} or None)
    return loss


def det_loss(name, args, num_classes=4):
    return _filled(ROWS[name][0], 1.0, args, num_classes)


def seg_loss(name, loss_weight, args, num_classes=4):
    return _filled(ROWS[name][1], loss_weight, args, num_classes)


def _longtail_halves(prefix, suffix, tail='shapes'):
    """The metric keys of a long-tail demo's head and tail and rarest class: the
    frequent and rare halves, or thirds (head / mid / tail) from 24 classes on."""
    from dfl_mm.demo.detection import TAIL_SPECS
    spec = TAIL_SPECS[tail]
    order = sorted(range(len(spec.classes)), key=lambda k: -spec.train_counts[k])
    parts = 3 if len(order) >= 24 else 2
    cut = [round(len(order) * i / parts) for i in range(parts + 1)]
    groups = [sorted(order[cut[i]:cut[i + 1]]) for i in range(parts)]
    keys = [f'{prefix}{name}{suffix}' for name in spec.classes]
    rarest = min(range(len(keys)), key=lambda k: spec.train_counts[k])
    halves = dict(head=[keys[k] for k in groups[0]], tail=[keys[k] for k in groups[-1]],
                  rarest=keys[rarest], rarest_count=spec.train_counts[rarest])
    if parts == 3:
        halves['mid'] = [keys[k] for k in groups[1]]
    return halves


# Each task: its demo config, the overall metric (x scale = %), and either its rare
# classes (the 4-class demos) or its head / tail halves by training frequency (the
# long-tail demos: per-class AP / IoU averaged over each half).
TASKS = {
    'det': dict(config=osp.join(DEMO, 'retinanet_r18_dfl_demo.py'), kind='det',
                metric='coco/bbox_mAP', scale=100.0, num_classes=4,
                rare={'triangle AP': 'coco/triangle_precision',
                      'cross AP': 'coco/cross_precision'}),
    'seg': dict(config=osp.join(DEMO, 'deeplabv3_r18_dfl_demo.py'), kind='seg',
                metric='mIoU', scale=1.0, num_classes=4,
                rare={'line IoU': 'IoU.line', 'dot IoU': 'IoU.dot'}),
    'det-lt': dict(config=osp.join(DEMO, 'retinanet_r18_dfl_longtail_demo.py'), kind='det',
                   metric='coco/bbox_mAP', scale=100.0, num_classes=10,
                   halves=lambda: _longtail_halves('coco/', '_precision')),
    'seg-lt': dict(config=osp.join(DEMO, 'deeplabv3_r18_dfl_longtail_demo.py'), kind='seg',
                   metric='mIoU', scale=1.0, num_classes=11,
                   halves=lambda: _longtail_halves('IoU.', '')),
}
# issue 27's other detection long tails (dfl_mm/demo/longtail.py TAILS): many confusable
# classes, small crowded objects, real handwritten digits
# and issue 34's two tails from other generators (dfl_mm/demo/rendered.py)
for _task, _tail, _classes in (('det-many', 'many', 36), ('det-small', 'small', 10),
                               ('det-digits', 'digits', 10), ('det-glyphs', 'glyphs', 36),
                               ('det-strokes', 'strokes', 24)):
    TASKS[_task] = dict(TASKS['det-lt'], num_classes=_classes, config=osp.join(
        DEMO, f"retinanet_r18_dfl_{dict(many='manyclass', small='smallcrowd').get(_tail, _tail)}"
        '_demo.py'), halves=lambda tail=_tail: _longtail_halves('coco/', '_precision', tail))
# issue 34: a many-class segmentation tail (background + the 36 confusable shape tones)
TASKS['seg-many'] = dict(TASKS['seg-lt'], num_classes=37, config=osp.join(
    DEMO, 'deeplabv3_r18_dfl_manyclass_demo.py'),
    halves=lambda: _longtail_halves('IoU.', '', 'many'))
# the RTMDet demos (a quality head): DFL in QualityFocalLoss's place against QFL itself
TASKS['rtmdet'] = dict(TASKS['det'], config=osp.join(DEMO, 'rtmdet_dfl_demo.py'))
TASKS['rtmdet-lt'] = dict(TASKS['det-lt'], config=osp.join(DEMO, 'rtmdet_dfl_longtail_demo.py'))
# the rows a quality head can take ((labels, scores) targets); the others are RetinaNet's
QUALITY_TASKS, QUALITY_LOSSES = ('rtmdet', 'rtmdet-lt'), ('QFL', 'DFL fixed', 'DFL + weights')
RETINANET_LOSSES = tuple(name for name in ROWS if name != 'QFL')
DEFAULT_SEEDS = {'det': [0, 1, 2], 'seg': [0, 1, 2, 3, 4], 'det-lt': [0, 1, 2],
                 'det-many': [0, 1, 2], 'det-small': [0, 1, 2], 'det-digits': [0, 1, 2],
                 'det-glyphs': [0, 1, 2], 'det-strokes': [0, 1, 2], 'seg-many': [0, 1, 2],
                 'seg-lt': [0, 1, 2, 3, 4], 'rtmdet': [0, 1, 2], 'rtmdet-lt': [0, 1, 2]}


def build_cfg(task, loss, seed, args, work_dir):
    from mmengine.config import Config
    spec = TASKS[task]
    cfg = Config.fromfile(spec['config'])
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.custom_hooks = [dict(type='DFLStepHook')]
    if spec['kind'] == 'det':
        cfg.model.bbox_head.loss_cls = det_loss(loss, args, spec['num_classes'])
        if loss == 'GHMC':  # as mmdet's configs/ghm
            cfg.optim_wrapper.clip_grad = dict(max_norm=35, norm_type=2)
        cfg.train_cfg.max_epochs = args.det_epochs
        cfg.train_cfg.val_interval = args.det_epochs
        milestones = [int(args.det_epochs * 0.75), int(args.det_epochs * 0.92)]
        cfg.param_scheduler[1].milestones = milestones
        cfg.param_scheduler[1].end = args.det_epochs
    else:
        cfg.model.decode_head.loss_decode = seg_loss(loss, 1.0, args, spec['num_classes'])
        cfg.model.auxiliary_head.loss_decode = seg_loss(loss, 0.4, args, spec['num_classes'])
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
    if not (_is_adaptive(loss) and args.adaptive):
        return loss
    return loss + ' [' + ', '.join(f'{k}={v}' for k, v in args.adaptive) + ']'


def _is_adaptive(loss):
    return any(isinstance(t, dict) and (ADAPTIVE in t or t.get('adaptive_weight') == ADAPTIVE)
               for t in ROWS[loss] if t is not None)


def run_one(task, loss, seed, args):
    from dfl_mm.apis.launch import build_runner
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
    if TASKS[task]['kind'] == 'det':
        return f'{args.det_epochs} epochs'
    return f'{args.seg_iters} iterations'


def _key(record):
    return record['task'], record['loss'], record['seed'], record.get('budget')


def write_records(path, records, previous):
    """Save this study's runs, keeping earlier runs that it did not redo. Written
    whole, then renamed: a reader (the tables of a running study) or a crash never
    sees half a file."""
    keys = {_key(r) for r in records}
    with open(path + '.tmp', 'w') as f:
        json.dump(records + [r for r in previous if _key(r) not in keys], f, indent=1)
    os.replace(path + '.tmp', path)


def _order(name):
    base = name.split(' [')[0]
    return (LOSSES.index(base) if base in LOSSES else len(LOSSES)), name


def _stat(values):
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{mean:.1f} ± {sd:.1f}'


def _half(record, keys, scale):
    """A run's mean AP / IoU (%) over the classes ``keys`` (a missing class: 0)."""
    values = (record['metrics'].get(k, 0.0) for k in keys)
    return statistics.mean((v if v == v else 0.0) * scale for v in values)  # nan: no box


def summarise(records, tasks):
    """Markdown tables, one per task and budget: mean ± sd over seeds and the worst seed
    of the overall metric and of the rare classes (4-class demos) or of the head and
    tail halves (long-tail demos)."""
    lines = []
    for task in tasks:
        spec = TASKS[task]
        for run_budget in sorted({r.get('budget') for r in records if r['task'] == task},
                                 key=lambda b: int(str(b).split()[0])):
            rows = [r for r in records if r['task'] == task and r.get('budget') == run_budget]
            lines += _table(task, spec, run_budget, rows)
    return '\n'.join(lines)


def _table(task, spec, run_budget, rows):
    metric_name = 'bbox mAP' if spec['kind'] == 'det' else 'mIoU'
    unit = 'AP' if spec['kind'] == 'det' else 'IoU'
    seeds = sorted({r['seed'] for r in rows})
    halves = spec['halves']() if 'halves' in spec else None
    if halves:
        columns = [metric_name, f'head {unit}', f'tail {unit}', f'worst {metric_name}',
                   f'worst head {unit}', f'worst tail {unit}', f'tail {unit} > 0',
                   f'rarest {unit}']
        legend = (f'head / tail = mean {unit} of the {len(halves["head"])} most / '
                  f'{len(halves["tail"])} least frequent classes; tail {unit} > 0 = seeds '
                  'whose tail half scores above 0; rarest = the class with '
                  f'{halves["rarest_count"]} training instances')
    else:
        rare = list(spec['rare'])
        columns = ([metric_name] + rare + [f'worst {metric_name}'] +
                   [f'worst {name}' for name in rare] + ['learned'])
        legend = f'learned = seeds with every rare class >= {LEARNED}'
    lines = [f'\n**{task}**, {run_budget} (seeds {seeds}; AP and IoU in %, mean ± sd; '
             f'worst = the lowest seed; {legend})\n',
             '| loss | ' + ' | '.join(columns) + ' | final gamma (decode head) | '
             'time / run (s) |',
             '|---|' + '---:|' * (len(columns) + 2)]
    for loss in sorted({r['loss'] for r in rows}, key=_order):
        runs = [r for r in rows if r['loss'] == loss]

        def values(key):
            return [r['metrics'].get(key, float('nan')) * spec['scale'] for r in runs]

        overall = values(spec['metric'])
        if halves:
            head = [_half(r, halves['head'], spec['scale']) for r in runs]
            tail = [_half(r, halves['tail'], spec['scale']) for r in runs]
            cells = [_stat(overall), _stat(head), _stat(tail), f'{min(overall):.1f}',
                     f'{min(head):.1f}', f'{min(tail):.1f}',
                     f'{sum(t > 0 for t in tail)}/{len(runs)}',
                     _stat(values(halves['rarest']))]
        else:
            cells = [_stat(overall)]
            cells += [_stat(values(key)) for key in spec['rare'].values()]
            cells += [f'{min(overall):.1f}']
            cells += [f'{min(values(key)):.1f}' for key in spec['rare'].values()]
            learned = sum(all(r['metrics'].get(key, 0) * spec['scale'] >= LEARNED
                              for key in spec['rare'].values()) for r in runs)
            cells.append(f'{learned}/{len(runs)}')
        gammas = [r['gamma'] for r in runs if r['gamma'] is not None]
        cells.append(f'{statistics.mean(gammas):.2f}' if gammas else '-')
        cells.append(f"{statistics.mean(r['seconds'] for r in runs):.0f}")
        lines.append(f'| {loss} | ' + ' | '.join(cells) + ' |')
    return lines


DECISION_PEERS = ('focal', 'EFL')  # the detection default must match them by the worst seed


def _det_summary(records, task, loss):
    """(worst mAP, mean mAP, mean head AP, mean tail AP) of a row on a detection task,
    or None; the 4-class demo has no halves (head / tail: None)."""
    spec = TASKS[task]
    runs = [r for r in records if r['task'] == task and r['loss'] == loss]
    if not runs:
        return None
    overall = [r['metrics'].get(spec['metric'], float('nan')) * spec['scale'] for r in runs]
    halves = spec['halves']() if 'halves' in spec else None
    head = tail = None
    if halves:
        head = statistics.mean(_half(r, halves['head'], spec['scale']) for r in runs)
        tail = statistics.mean(_half(r, halves['tail'], spec['scale']) for r in runs)
    return min(overall), statistics.mean(overall), head, tail


def summarise_decision(records, tasks):
    """The detection default's rule, row by row: on every detection task, the worst
    seed's mAP against the best peer's (focal, EFL), and on the long tails head AP
    against focal's - 1 and tail AP against focal's + 2. A row meets the rule where
    every cell says so."""
    tasks = [t for t in tasks if TASKS[t]['kind'] == 'det' and t not in QUALITY_TASKS]
    rows = sorted({r['loss'] for r in records if r['task'] in tasks}, key=_order)
    if not tasks or 'focal' not in rows:
        return ''
    lines = ['\n\n**The detection default\'s rule** (each cell: worst-seed mAP minus the best '
             'peer\'s worst (focal, EFL); on the long tails also head AP minus focal\'s and '
             'tail AP minus focal\'s, means; a row passes a set with >= 0, >= -1 and >= +2; '
             '- = not run)\n',
             '| row | ' + ' | '.join(tasks) + ' | sets passed |',
             '|---|' + '---|' * len(tasks) + '---:|']
    for loss in rows:
        cells, passed = [], 0
        for task in tasks:
            mine, focal = _det_summary(records, task, loss), _det_summary(records, task, 'focal')
            peers = [_det_summary(records, task, p) for p in DECISION_PEERS]
            peers = [p for p in peers if p is not None]
            if mine is None or focal is None:
                cells.append('-')
                continue
            worst = mine[0] - max(p[0] for p in peers)
            cell, ok = f'{worst:+.1f}', worst >= 0
            if mine[2] is not None:
                head, tail = mine[2] - focal[2], mine[3] - focal[3]
                cell += f' / {head:+.1f} / {tail:+.1f}'
                ok = ok and head >= -1 and tail >= 2
            cells.append(cell + (' ✓' if ok else ''))
            passed += ok
        lines.append(f'| {loss} | ' + ' | '.join(cells) + f' | {passed}/{len(tasks)} |')
    return '\n'.join(lines)


HELD_OUT = osp.join(osp.dirname(osp.abspath(__file__)), 'heldout_issue34.json')
PRIOR_SECTION = '## 2026-12-06'  # --prior: the runs reused from that study's tables
MIN_SEEDS = 3  # seeds a row needs on every set to be chosen by leave-one-set-out
LONG_TAILS = ('det-lt', 'det-many', 'det-small', 'det-digits', 'det-glyphs', 'det-strokes')
# the settings the detection default is chosen from (issue 34)
DFL_DET_ROWS = ('DFL fixed', 'DFL gamma 3', 'DFL learnable', 'DFL learnable from 3',
                'DFL alpha 0.75', 'DFL alpha 0.5', 'DFL alpha 0.25', 'DFL gamma 1.5',
                'DFL alpha 0.25 learnable', 'DFL alpha 0.25 + weights',
                'DFL + weights', 'DFL gamma 3 + weights', 'DFL learnable + weights',
                'DFL learnable from 3 + weights')


def det_summaries(records, tasks):
    """{(task, row): summary} of the long-tail detection runs (``leave_one_out``)."""
    out = {}
    for task in tasks:
        spec = TASKS[task]
        halves = spec['halves']()
        for loss in {r['loss'] for r in records if r['task'] == task}:
            runs = [r for r in records if r['task'] == task and r['loss'] == loss]
            overall = [r['metrics'].get(spec['metric'], float('nan')) * spec['scale']
                       for r in runs]

            def part(name):
                if name not in halves:
                    return None
                return statistics.mean(_half(r, halves[name], spec['scale']) for r in runs)

            out[(task, loss)] = dict(
                mean=statistics.mean(overall),
                sd=statistics.stdev(overall) if len(overall) > 1 else 0.0,
                worst=min(overall), head=part('head'), mid=part('mid'), tail=part('tail'),
                seeds=len(runs), source='this study')
    return out


def summarise_leave_one_out(records, prior_file=None):
    """Every long tail x every row, and the leave-one-set-out choice; runs of an
    earlier study (``prior_file``, its tables) fill (set, row) pairs not run here."""
    import leave_one_out
    summaries = {}
    if prior_file:
        with open(prior_file) as f:
            text = f.read()
        # the 2026-12-06 study's section; the 10-class tails: their halves are unchanged
        section = text[text.index(PRIOR_SECTION):]
        section = section[:section.find('\n## ', 1) if '\n## ' in section[1:] else None]
        summaries = leave_one_out.parse_tables(
            section, ('det-lt', 'det-small', 'det-digits'), 'the 2026-12-06 study')
    summaries.update(det_summaries(records, LONG_TAILS))
    external = leave_one_out.load_external(HELD_OUT)
    summaries.update(external)
    tasks = [t for t in LONG_TAILS if (t, 'focal') in summaries]
    tasks += sorted({t for t, _ in external})
    rows = [r for r in ('focal', 'EFL') + DFL_DET_ROWS
            if any((t, r) in summaries for t in tasks)]
    candidates = leave_one_out.eligible(summaries, tasks, DFL_DET_ROWS)
    lines = leave_one_out.leave_one_set_out(summaries, tasks, candidates)
    # the held-out sets are not here to run new rows on: the same choice over the sets of
    # this repository, among the rows run on all of them with MIN_SEEDS seeds or more
    here = [t for t in tasks if t in LONG_TAILS]
    here_candidates = leave_one_out.eligible(summaries, here, DFL_DET_ROWS, MIN_SEEDS)
    here_lines = leave_one_out.leave_one_set_out(summaries, here, here_candidates)
    spread = ['| row | where it is behind FocalLoss\'s mean by more than its own sd |',
              '|---|---|']
    for row in dict.fromkeys(candidates + here_candidates):
        behind = leave_one_out.within_spread(summaries, tasks, row)
        spread.append(f'| {row} | ' + ('never' if not behind else '; '.join(
            f'{t}: {d:+.1f} (sd {sd:.1f})' for t, d, sd in behind)) + ' |')
    return ('\n\n**Every long tail x every row** (bbox mAP %, mean ± sd over seeds (worst '
            'seed); head / mid / tail = mean AP of the most / middle / least frequent thirds, '
            'halves for 10 classes; the rule: mean and worst >= focal, head >= focal - 1, '
            'tail >= focal; the held-out sets: issue 34\'s measurements, not re-run here)\n\n'
            + leave_one_out.table(summaries, tasks, rows)
            + f'\n\n**Leave one set out** (candidates: the DFL rows run on every set: '
            f"{', '.join(candidates)})\n\n" + leave_one_out.loso_table(lines)
            + '\n\n**Leave one set out, the sets of this repository** (candidates: the DFL '
            f"rows run on all of them with {MIN_SEEDS}+ seeds: {', '.join(here_candidates)})\n\n"
            + leave_one_out.loso_table(here_lines)
            + '\n\n**Never behind by more than its spread?**\n\n' + '\n'.join(spread))


DEFAULT_ROWS = ('focal', 'DFL fixed', 'DFL alpha 0.25', 'DFL + weights', 'DFL alpha 0.25 + weights')


def summarise_iou(records, tasks, rows=DEFAULT_ROWS):
    """bbox AP at IoU 0.5 and at 0.75 per set and row (means over seeds): where a row's
    lead comes from, finding the objects or placing the boxes."""
    lines = ['\n\n**AP at IoU 0.5 / 0.75** (%, mean over seeds)\n',
             '| set | ' + ' | '.join(rows) + ' |', '|---|' + '---:|' * len(rows)]
    for task in tasks:
        cells = []
        for row in rows:
            runs = [r['metrics'] for r in records if r['task'] == task and r['loss'] == row
                    and 'coco/bbox_mAP_50' in r['metrics']]
            cells.append('-' if not runs else ' / '.join(
                f"{100 * statistics.mean(m[k] for m in runs):.1f}"
                for k in ('coco/bbox_mAP_50', 'coco/bbox_mAP_75')))
        lines.append(f'| {task} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def summarise_per_class(records, tasks, rows=DEFAULT_ROWS, bins=6):
    """AP against training count: the classes of each many-class tail in ``bins``
    groups by frequency rank, each row's mean AP over the group and the seeds."""
    from dfl_mm.demo.detection import TAIL_SPECS
    lines = []
    for task in tasks:
        spec = TASKS[task]
        tail = TAIL_SPECS[task.split('-', 1)[1] if task != 'det-lt' else 'shapes']
        order = sorted(range(len(tail.classes)), key=lambda k: -tail.train_counts[k])
        present = [r for r in rows if any(x['task'] == task and x['loss'] == r for x in records)]
        if len(order) < 2 * bins or not present:
            continue
        lines += [f'\n**{task}**: AP (%) by training count, {bins} groups of classes by '
                  'frequency rank (mean over the group and the seeds)\n',
                  '| classes (training instances) | ' + ' | '.join(present) + ' |',
                  '|---|' + '---:|' * len(present)]
        for i in range(bins):
            group = order[i * len(order) // bins:(i + 1) * len(order) // bins]
            counts = [tail.train_counts[k] for k in group]
            keys = [f'coco/{tail.classes[k]}_precision' for k in group]
            cells = []
            for row in present:
                runs = [x for x in records if x['task'] == task and x['loss'] == row]
                cells.append(f"{statistics.mean(_half(x, keys, spec['scale']) for x in runs):.1f}")
            lines.append(f'| {len(group)} ({max(counts)}-{min(counts)}) | ' + ' | '.join(cells)
                         + ' |')
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
    parser.add_argument('--det-epochs', type=int, default=24, help='det and det-lt')
    parser.add_argument('--seg-iters', type=int, default=1000, help='seg and seg-lt')
    parser.add_argument('--subset', type=int, help='train on the first N images only')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--work-dir', default='work_dirs/efficacy')
    parser.add_argument('--out', default='efficacy.md', help='markdown table to write')
    parser.add_argument('--summarise-only', action='store_true',
                        help='train nothing: write the tables of every run in '
                        'WORK_DIR/records.json and WORK_DIR/*/records.json (the lanes of '
                        'tools/benchmarks/efficacy_study.sh)')
    parser.add_argument('--leave-one-out', action='store_true',
                        help='with --summarise-only: also every long tail x every row and '
                        'the leave-one-set-out choice of the detection default')
    parser.add_argument('--prior', help='tables of an earlier study (markdown) whose runs '
                        'fill the (set, row) pairs not run here (--leave-one-out)')
    parser.add_argument('--reuse', action='store_true',
                        help='take the runs already in WORK_DIR/records.json (same task, '
                        'loss, seed and budget) instead of training them again')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import dfl_mm  # noqa: F401
    import dfl_mm.demo.detection  # noqa: F401
    import dfl_mm.demo.segmentation  # noqa: F401
    study_losses.register()

    study_start = time.perf_counter()
    records_file = osp.join(args.work_dir, 'records.json')
    previous = []  # runs of earlier studies: kept in the file, reused with --reuse
    if osp.isfile(records_file):
        with open(records_file) as f:
            previous = json.load(f)
    os.makedirs(args.work_dir, exist_ok=True)
    records = []
    if args.summarise_only:  # this work dir's runs and those of the work dirs in it
        for lane in sorted(glob.glob(osp.join(args.work_dir, '*', 'records.json'))):
            with open(lane) as f:
                previous += json.load(f)
        records = [r for r in previous if r['task'] in args.tasks]
    for task in ([] if args.summarise_only else args.tasks):
        for loss in args.losses:
            kind = TASKS[task]['kind']
            if (loss in SEG_ONLY and kind != 'seg') or (loss in DET_ONLY and kind != 'det'):
                continue
            # RetinaNet's peers take hard labels; QFL takes (labels, scores)
            if loss not in (QUALITY_LOSSES if task in QUALITY_TASKS else RETINANET_LOSSES):
                continue
            for seed in args.seeds or DEFAULT_SEEDS[task]:
                key = (task, row_name(loss, args), seed, budget(task, args))
                done = [r for r in previous if _key(r) == key] if args.reuse else []
                records.append(done[0] if done else run_one(task, loss, seed, args))
                write_records(records_file, records, previous)
    if not records:  # never overwrite a table with an empty one
        raise SystemExit(f'efficacy study: no runs recorded for tasks {args.tasks} in '
                         f'{args.work_dir}: {args.out} is left as it was')
    total = time.perf_counter() - study_start
    table = (summarise(records, args.tasks) + summarise_decision(records, args.tasks)
             + summarise_gradient_share(records))
    if args.leave_one_out:
        table += summarise_leave_one_out(records, args.prior)
        table += summarise_iou(records, [t for t in LONG_TAILS if t in args.tasks])
        table += summarise_per_class(records, [t for t in ('det-many', 'det-glyphs',
                                                           'det-strokes') if t in args.tasks])
    train_minutes = sum(r['seconds'] for r in records) / 60
    threads = sorted({r.get('threads', args.threads) for r in records})
    header = (f'Efficacy study: {len(records)} runs, {train_minutes:.1f} min of training '
              f"on CPU ({'/'.join(map(str, threads))} thread(s) per run; this invocation took "
              f'{total / 60:.1f} min); '
              + ('budgets as in each table\'s heading' if args.summarise_only else
                 f'det {args.det_epochs} epochs, seg {args.seg_iters} iterations per run')
              + (f'; adaptive weights: {dict(args.adaptive)}' if args.adaptive else '') + '.\n')
    with open(args.out, 'w') as f:
        f.write(header + table + '\n')
    print(header + table)
    return records


if __name__ == '__main__':
    main()
