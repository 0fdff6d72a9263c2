"""Evaluate a checkpoint with mmengine's Runner (mmdet or mmseg config).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import dfl_mm  # noqa: E402,F401
from dfl_mm.launch import (add_common_args, build_runner, check_datasets,  # noqa: E402
                           load_config, setup_cpu_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a model trained with DualFocalLoss')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must be a .pkl file, got {args.out}')
        cfg.test_evaluator = [*(cfg.test_evaluator if isinstance(cfg.test_evaluator, list)
                                else [cfg.test_evaluator]),
                              dict(type='DumpResults', out_file_path=args.out)]
    check_datasets(cfg, ('test_dataloader', ))
    setup_cpu_distributed(cfg)
    return build_runner(cfg).test()


if __name__ == '__main__':
    main()
