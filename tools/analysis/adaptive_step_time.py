"""What adaptive class weights cost: training-step time with and without them.

    python tools/analysis/adaptive_step_time.py [--repeats 15] [--threads 2]

Builds the demo DeepLabV3 and RetinaNet models (real mmseg / mmdet models on
one real batch of 8 demo images), once with ``DualFocalLoss`` without class
weights and once with ``class_weight='adaptive'``, and times full training steps
(``model.train_step``: forward, loss, backward, optimizer step), alternating
the two so that machine noise hits both. Prints the median step time of each
and their ratio. The RetinaNet head calls its loss once per FPN level (5 calls
a step), so its row also covers the per-call bookkeeping.
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
DEMOS = {
    'DeepLabV3 demo (seg)': ('deeplabv3_r18_dfl_demo.py', 'decode_head', 'auxiliary_head'),
    'RetinaNet demo (det)': ('retinanet_r18_dfl_demo.py', 'bbox_head'),
}


def arms(cfg, heads):
    """The two arms: the demo's losses without class weights and with adaptive ones
    (the demos ship adaptive weights, so 'without' takes them out)."""
    out = {}
    for name, weights in (('without', dict(class_weight=None)),
                          ('with', dict(class_weight='adaptive'))):
        arm = copy.deepcopy(cfg)
        for head in heads:
            loss = arm.model[head]['loss_cls' if head == 'bbox_head' else 'loss_decode']
            loss.pop('adaptive_weight', None)
            loss.update(weights, num_classes=arm.model[head].num_classes)
        out[name] = arm
    return out


def _stepper(cfg, batch):
    """A closure running one training step of a freshly built model."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)

    def step():
        model.train_step(batch, optim)
    return step


def time_pair(config, heads, repeats):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', config))
    init_default_scope(cfg.default_scope)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch = next(iter(loader))
    steps = {name: _stepper(arm, batch) for name, arm in arms(cfg, heads).items()}
    times = {name: [] for name in steps}
    for name, step in steps.items():  # warm-up (kernel build, allocator)
        step()
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import dfl_mm  # noqa: F401
    import dfl_mm.demo.detection  # noqa: F401
    import dfl_mm.demo.segmentation  # noqa: F401
    print(f'training step, median of {args.repeats} alternating runs, '
          f'{args.threads} threads, batch 8\n')
    print('| model | without (ms) | with adaptive weights (ms) | ratio |')
    print('|---|---:|---:|---:|')
    results = {}
    for title, (config, *heads) in DEMOS.items():
        medians = time_pair(config, heads, args.repeats)
        ratio = medians['with'] / medians['without']
        results[title] = ratio
        print(f"| {title} | {1e3 * medians['without']:.1f} | {1e3 * medians['with']:.1f} "
              f'| {ratio:.3f} |')
    return results


if __name__ == '__main__':
    main()
