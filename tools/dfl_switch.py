"""Write the DualFocalLoss version of any mmdet/mmseg config, without editing it.

    python tools/train.py $(python tools/dfl_switch.py mmdet::fsaf/fsaf_r50_fpn_1x_coco.py)
    python tools/dfl_switch.py my_config.py -o configs/my_config_dfl.py

The written config inherits CONFIG (``_base_``) and replaces every FocalLoss
with a sigmoid DualFocalLoss (gamma 2, its alpha, no class weights) and every softmax
CrossEntropyLoss of an mmseg decode/auxiliary head with a softmax DualFocalLoss
(learnable gamma, adaptive class weights unless --no-adaptive): the shipped settings
of each task, keeping each loss weight; it adds
``custom_imports=['dfl_mm']``, ``DFLStepHook`` and no weight decay on gamma
(see ``dfl_mm.apis.switch``). It prints the written file's path (stdout) and what
it replaced (stderr).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     epilog=__doc__.split('\n\n', 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='a config file, or mmdet::... / mmseg::...')
    parser.add_argument('-o', '--out', help='where to write (default: '
                        'work_dirs/dfl_configs/<name>_dfl.py)')
    parser.add_argument('--no-adaptive', action='store_true',
                        help='segmentation losses without adaptive class weights '
                        '(detection losses never get them: its shipped setting)')
    args = parser.parse_args(argv)
    from mmengine.config import Config

    from dfl_mm.apis.cli import resolve_config
    from dfl_mm.apis.switch import derived_config_text, dfl_overrides, replacement_name
    resolved = resolve_config(args.config, 'dfl_switch')
    cfg = Config.fromfile(resolved)
    try:
        overrides, replaced = dfl_overrides(cfg, adaptive=not args.no_adaptive)
    except ValueError as err:
        raise SystemExit(f'dfl_switch: {args.config}: {err}') from None
    if not replaced:
        raise SystemExit(f'dfl_switch: {args.config} has no dense classification loss to '
                         'replace (FocalLoss, QualityFocalLoss, VarifocalLoss, a dense '
                         "head's sigmoid CrossEntropyLoss, SSDHead, a decode head's "
                         'CrossEntropyLoss; docs/zoo.md)')
    # the written config loads from any directory: a package config by its scope,
    # any other by the absolute path of the file it resolved to
    base = args.config if '::' in args.config else resolved
    name = osp.splitext(osp.basename(args.config.split('::')[-1]))[0]
    out = args.out or osp.join('work_dirs', 'dfl_configs', f'{name}_dfl.py')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        f.write(derived_config_text(base, overrides, replaced))
    for path, old in replaced:
        print(f'dfl_switch: {path}: {old} -> {replacement_name(old)}', file=sys.stderr)
    print(out)


if __name__ == '__main__':
    main()
