"""Evaluate a checkpoint with mmengine's Runner (mmdet or mmseg config).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl | DIR]
        [--show] [--show-dir DIR] [--wait-time S] [--tta]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

The flags are mmdet's and mmseg's: CHECKPOINT may be a path or a URL
(``https://``, ``http://`` and the other schemes mmengine loads); ``--out``
takes mmdet's ``.pkl`` (raw predictions) or, for mmseg configs, a folder (the
predicted label maps, as mmseg's ``--out``); ``--show``/``--show-dir`` draw
the predictions with the config's visualization hook; ``--tta`` tests with the
config's ``tta_model``/``tta_pipeline`` (mmdet configs without them get
mmdet's default flip TTA, as in mmdet's tools).
"""
import argparse
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import dfl_mm  # noqa: E402,F401
from dfl_mm.apis.launch import (  # noqa: E402
    add_common_args,
    build_runner,
    check_datasets,
    load_config,
    setup_cpu_distributed,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test a model trained with DualFocalLoss (mmdet or mmseg config)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file or URL')
    parser.add_argument('--out', help='dump the raw predictions to a .pkl file, or (mmseg '
                        'configs) write the predicted label maps into this folder')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='folder (under the work dir unless absolute) '
                        'where the painted predictions are saved')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each shown image stays up (--show)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    add_common_args(parser)
    return parser.parse_args(argv)


def _scope(cfg) -> str:
    scope = cfg.get('default_scope') or 'mmdet'
    if scope not in ('mmdet', 'mmseg'):
        raise SystemExit(f"config's default_scope must be 'mmdet' or 'mmseg', got {scope!r}")
    return scope


def _visualize(cfg, args, scope):
    """Turn on the config's visualization hook, as mmdet's/mmseg's tools do."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise SystemExit('--show/--show-dir need a visualization hook in default_hooks '
                         f"(e.g. visualization=dict(type='{'Det' if scope == 'mmdet' else 'Seg'}"
                         "VisualizationHook'))")
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if scope == 'mmdet':  # mmdet's hook puts it under work_dir/<timestamp>/
            hook['test_out_dir'] = args.show_dir
        else:  # mmseg's visualizer would write a relative folder into the cwd
            cfg.visualizer['save_dir'] = osp.join(cfg.work_dir, args.show_dir)


def _tta(cfg, scope):
    """Wrap the model and the test pipeline for test-time augmentation."""
    if scope == 'mmdet':
        if not cfg.get('tta_model'):
            warnings.warn('no tta_model in the config: using mmdet\'s default (flip, NMS 0.5)')
            cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        if not cfg.get('tta_pipeline'):
            warnings.warn('no tta_pipeline in the config: its test pipeline with flips')
            cfg.tta_pipeline = list(cfg.test_dataloader.dataset.pipeline)
            cfg.tta_pipeline[-1] = dict(type='TestTimeAug', transforms=[
                [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
                [dict(type='PackDetInputs', meta_keys=(
                    'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                    'flip_direction'))]])
    elif not cfg.get('tta_model') or not cfg.get('tta_pipeline'):
        raise SystemExit('--tta needs tta_model and tta_pipeline in the config (mmseg '
                         "dataset configs define them: e.g. tta_model = dict(type='SegTTAModel'))")
    cfg.tta_model.module = cfg.model
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.model = cfg.tta_model


def _dump(cfg, out, scope):
    """mmdet's .pkl of raw predictions, or mmseg's folder of label maps."""
    if out.endswith(('.pkl', '.pickle')):
        evaluators = cfg.test_evaluator
        cfg.test_evaluator = [*(evaluators if isinstance(evaluators, list) else [evaluators]),
                              dict(type='DumpResults', out_file_path=out)]
    elif scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    else:
        raise SystemExit(f'--out must be a .pkl file for mmdet configs, got {out}')


def main(argv=None):
    args = parse_args(argv)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args)
    scope = _scope(cfg)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show or args.show_dir:
        _visualize(cfg, args, scope)
    if args.tta:
        _tta(cfg, scope)
    if args.out is not None:
        _dump(cfg, args.out, scope)
    check_datasets(cfg, ('test_dataloader', ))
    setup_cpu_distributed(cfg)
    return build_runner(cfg).test()


if __name__ == '__main__':
    main()
