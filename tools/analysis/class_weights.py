"""Static class weights from a config's training set, by the adaptive formula.

    python tools/analysis/class_weights.py CONFIG [--out weights.npy]
        [--power 0.5] [--max-weight 10] [--eps 1e-4] [--apply-to element]
        [--cfg-options KEY=VALUE ...]

Counts the classes of the training set of an mmseg config (labelled pixels of
each class, after the dataset's ``reduce_zero_label`` / ``label_map``) or of an
mmdet config (non-ignored boxes of each class), turns the counts into weights
with the formula of ``class_weight='adaptive'`` (``dfl_mm.models.adaptive``), saves
them as ``.npy`` and prints the counts and a ``class_weight=[...]`` line.
``--apply-to element`` (default) normalises for DualFocalLoss's static
``class_weight`` (the class-c element of every row); ``row`` for mmseg
CrossEntropyLoss's (a pixel weighted by its class).
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch
from mmengine.config import Config, DictAction

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def count_classes(cfg) -> tuple:
    """(class names, (C,) int64 counts) of the config's training set."""
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    dataset.full_init()
    classes = tuple(dataset.metainfo['classes'])
    counts = np.zeros(len(classes), dtype=np.int64)
    if cfg.default_scope == 'mmseg':
        from mmseg.datasets.transforms import LoadAnnotations
        load = LoadAnnotations()
        for i in range(len(dataset)):
            info = dict(dataset.get_data_info(i), seg_fields=[])
            labels = load(info)['gt_seg_map'].reshape(-1)
            counts += np.bincount(labels[labels < len(classes)], minlength=len(classes))
    elif cfg.default_scope == 'mmdet':
        for i in range(len(dataset)):
            for instance in dataset.get_data_info(i)['instances']:
                if not instance.get('ignore_flag', 0):
                    counts[instance['bbox_label']] += 1
    else:
        raise ValueError(f"expected an mmseg or mmdet config (default_scope 'mmseg' or "
                         f"'mmdet'), got default_scope={cfg.get('default_scope')!r}")
    return classes, counts


def main(argv=None):
    from dfl_mm.models.adaptive import ADAPTIVE_DEFAULTS, APPLY_TO, frequency_weights
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--out', help='.npy file to write (default: '
                        'work_dirs/<config name>_class_weight.npy)')
    parser.add_argument('--power', type=float, default=ADAPTIVE_DEFAULTS['power'])
    parser.add_argument('--max-weight', type=float, default=ADAPTIVE_DEFAULTS['max_weight'])
    parser.add_argument('--eps', type=float, default=ADAPTIVE_DEFAULTS['eps'])
    parser.add_argument('--apply-to', choices=APPLY_TO, default='element')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    classes, counts = count_classes(cfg)
    if counts.sum() == 0:
        raise SystemExit(f'{args.config}: the training set has no labelled pixels or boxes')
    weights = frequency_weights(torch.from_numpy(counts), args.power, args.eps,
                                args.max_weight, args.apply_to).numpy().astype(np.float32)
    out = args.out or osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0]
                               + '_class_weight.npy')
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    np.save(out, weights)
    width = max(len(c) for c in classes)
    for name, n, w in zip(classes, counts, weights):
        print(f'{name:>{width}}  {n:>12d}  {n / counts.sum():8.4%}  {w:.4f}')
    print(f'saved {out}')
    print('class_weight=[' + ', '.join(f'{w:.4f}' for w in weights) + ']')
    return classes, counts, weights


if __name__ == '__main__':
    main()
