"""Train a detector or segmentor with mmengine's Runner (the config's
default_scope decides: mmdet or mmseg).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import dfl_mm  # noqa: E402,F401  registers DualFocalLoss, DFLStepHook, demo datasets
from dfl_mm.apis.launch import (  # noqa: E402
    add_common_args,
    build_runner,
    check_datasets,
    check_resume_checkpoint,
    enable_amp,
    load_config,
    setup_cpu_distributed,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model with DualFocalLoss')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or without a value from the latest checkpoint of work_dir')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the total batch size')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        from mmengine.runner import find_latest_checkpoint
        cfg.resume, cfg.load_from = True, None
        latest = find_latest_checkpoint(cfg.work_dir) if osp.isdir(cfg.work_dir) else None
        if latest is not None:
            check_resume_checkpoint(latest)
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume: checkpoint not found: {args.resume}')
        check_resume_checkpoint(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    check_datasets(cfg, ('train_dataloader', 'val_dataloader'))
    setup_cpu_distributed(cfg)
    return build_runner(cfg).train()


if __name__ == '__main__':
    main()
