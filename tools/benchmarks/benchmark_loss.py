"""Speed and memory of DualFocalLoss against its peers, side by side in one run.

    python tools/benchmarks/benchmark_loss.py [--quick] [--threads 2] [--repeats 9]
        [--device cpu|cuda]
        [--anchors 200000] [--lvis-anchors 20000 --lvis-classes 1203]
        [--seg-shape 2 19 256 512] [--ade-shape 2 150 128 256]
        [--dtype float32|bfloat16] [--only sigmoid|lvis|softmax|ade]

Each contender runs forward + backward on the same logits; the table shows the
median time of ``--repeats`` runs (after one warm-up; the runs alternate
between the contenders of a group, so noise hits them alike) with the fastest
and slowest run, its ratio to the
reference of its group (mmdet's FocalLoss for sigmoid, F.cross_entropy for
softmax), the peak extra memory during forward + backward and the bytes kept
for backward beyond the inputs, both as multiples of the logits' bytes. Each
group also runs DFL on its PyTorch core (without the C kernel on CPU
or the Triton kernels on CUDA); on CUDA both groups add ``logits.clone()`` as
the memory-bandwidth floor (column "/ clone").

``--quick`` (about 1 min on 2 CPU cores): 3 repeats at a tenth of the default
sizes, to check that it runs and see rough ratios; the README's figures use
the defaults.
"""
import argparse
import os
import statistics
import sys
from contextlib import contextmanager

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import elapsed_ms, peak_extra_bytes  # noqa: E402


@contextmanager
def saved_bytes_counter(inputs):
    """Count bytes that autograd saves for backward, except the inputs' own."""
    input_ptrs = {t.untyped_storage().data_ptr() for t in inputs if t is not None}
    seen, counter = set(), [0]

    def pack(tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in input_ptrs and ptr not in seen:
            seen.add(ptr)
            counter[0] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter


def reference_core(loss_fn):
    """Mark a DFL row to run (forward and backward) on the chunked PyTorch core,
    without the Triton or C kernels."""
    def run(x):
        return loss_fn(x)
    run.core_only = True
    return run


@contextmanager
def kernels_off(active):
    if not active:
        yield
        return
    from dfl_mm import ops
    with ops.use('reference'):
        yield


def measure_group(contenders, logits, repeats, device, extra_inputs=()):
    """Median fwd+bwd time, peak extra bytes and saved bytes of each contender.

    The timed runs alternate between the contenders (round r times each once),
    so machine noise hits all of them alike. A ``loss_fn`` of None times
    ``logits.clone()``: the bandwidth floor.
    """
    runs = []
    for name, loss_fn, extra in contenders:
        x = logits.detach().clone().requires_grad_(loss_fn is not None)

        def run(x=x, loss_fn=loss_fn):
            if loss_fn is None:
                return x.clone()
            x.grad = None
            with kernels_off(getattr(loss_fn, 'core_only', False)):
                loss_fn(x).backward()

        run()  # warm-up
        runs.append((name, loss_fn, extra, x, run))
    times = {name: [] for name, *_ in runs}
    for _ in range(repeats):
        for name, _, _, _, run in runs:
            times[name].append(elapsed_ms(run, device) / 1e3)
    results = []
    for name, loss_fn, extra, x, run in runs:
        x.grad = None
        peak = peak_extra_bytes(run, device)
        x.grad = None
        saved = [0]
        if loss_fn is not None:
            with saved_bytes_counter((x, ) + tuple(extra) + tuple(extra_inputs)) as saved, \
                    kernels_off(getattr(loss_fn, 'core_only', False)):
                loss_fn(x)
        results.append(dict(name=name, time=statistics.median(times[name]), peak=peak,
                            saved=saved[0], spread=(min(times[name]), max(times[name]))))
    return results


def sigmoid_contenders(num_classes, labels, device):
    """The sigmoid group: mmdet's FocalLoss (the reference, where mmdet is installed),
    DFL on its kernel and on the PyTorch core, torchvision's focal loss, BCE."""
    from dfl_mm import dual_focal_loss
    avg = float((labels < num_classes).sum().clamp(min=1))
    onehot = F.one_hot(labels, num_classes + 1)[:, :num_classes].float()
    kernel = ' (Triton)' if device.type == 'cuda' else ' (C kernel)'
    rows = []
    try:
        from mmdet.models.losses import FocalLoss
    except ImportError:  # gpu_check: torch (+ torchvision) only
        FocalLoss = None
    if FocalLoss is not None:
        focal = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25).to(device)
        rows.append(('mmdet FocalLoss' + (' (mmcv CUDA op)' if device.type == 'cuda'
                                          else ' (PyTorch)'),
                     lambda x: focal(x, labels, avg_factor=avg), ()))
    rows += _dfl_rows(kernel, lambda x, g: dual_focal_loss(x, labels, g, avg_factor=avg),
                      device)
    try:
        from torchvision.ops import sigmoid_focal_loss
        rows.append(('torchvision sigmoid_focal_loss (one-hot given)',
                     lambda x: sigmoid_focal_loss(x, onehot, reduction='sum') / avg, (onehot, )))
    except ImportError:
        pass
    rows.append(('F.binary_cross_entropy_with_logits (one-hot given)',
                 lambda x: F.binary_cross_entropy_with_logits(x, onehot, reduction='sum') / avg,
                 (onehot, )))
    return rows + _floor(device)


def softmax_contenders(labels, device):
    """The softmax group: F.cross_entropy (the reference) and DFL, kernel and core."""
    from dfl_mm import dual_focal_loss
    kernel = ' (Triton)' if device.type == 'cuda' else ' (C kernel)'
    rows = [('F.cross_entropy', lambda x: F.cross_entropy(x, labels, ignore_index=255), ())]
    rows += _dfl_rows('softmax' + kernel, lambda x, g: dual_focal_loss(
        x, labels, g, use_sigmoid=False, ignore_index=255), device)
    return rows + _floor(device)


def _dfl_rows(kernel, loss, device):
    """DFL with a fixed and a learnable gamma (a tensor that gets its gradient) on the
    kernel that 'auto' picks, and the fixed one on the PyTorch core."""
    gamma = torch.tensor(2.0, device=device, requires_grad=True)
    return [(f'DFL {kernel}, fixed gamma'.replace('  ', ' '), lambda x: loss(x, 2.0), ()),
            (f'DFL {kernel}, learnable gamma'.replace('  ', ' '), lambda x: loss(x, gamma), ()),
            ('DFL, fixed gamma (PyTorch core)', reference_core(lambda x: loss(x, 2.0)), ())]


def _floor(device):
    return [('logits.clone() (bandwidth floor)', None, ())] if device.type == 'cuda' else []


def sigmoid_inputs(anchors, num_classes, device, dtype, gen):
    """RetinaNet-like logits and labels: ~1 % positive anchors, the rest background."""
    logits = (2 * torch.randn(anchors, num_classes, generator=gen) - 4).to(device, dtype)
    labels = torch.full((anchors, ), num_classes, dtype=torch.long)
    pos = torch.randperm(anchors, generator=gen)[:anchors // 100]
    labels[pos] = torch.randint(0, num_classes, (len(pos), ), generator=gen)
    return logits, labels.to(device)


def softmax_inputs(shape, device, dtype, gen):
    """DeepLab-like logits (B, C, H, W) and labels, the top 1/16 of each map ignored."""
    b, c, h, w = shape
    logits = (2 * torch.randn(b, c, h, w, generator=gen)).to(device, dtype)
    labels = torch.randint(0, c, (b, h, w), generator=gen)
    labels[:, :h // 16] = 255
    return logits, labels.to(device)


def run_group(kind, shape, repeats, device, dtype, gen):
    """One group of the table: ('sigmoid', (anchors, C)) or ('softmax', (B, C, H, W));
    returns (logits, results)."""
    if kind == 'sigmoid':
        logits, labels = sigmoid_inputs(*shape, device, dtype, gen)
        contenders = sigmoid_contenders(shape[1], labels, device)
    else:
        logits, labels = softmax_inputs(shape, device, dtype, gen)
        contenders = softmax_contenders(labels, device)
    return logits, measure_group(contenders, logits, repeats, device, (labels, ))


# the CUDA shapes of tools/gpu_check.py: RetinaNet at 1333 x 800 with 8 images, DeepLab
# at 512 x 1024 with 8 images
GPU_GROUPS = (('RetinaNet-like, sigmoid', 'sigmoid', (1_875_000, 80)),
              ('DeepLab-like, softmax', 'softmax', (8, 19, 512, 1024)))


def print_group(title, logits, results):
    ref = results[0]
    nbytes = logits.numel() * logits.element_size()
    print(f'\n{title}: logits {tuple(logits.shape)} {logits.dtype}, '
          f'{nbytes / 2**20:.0f} MiB')
    floor = next((r for r in results if 'floor' in r['name']), None)
    print('| loss | fwd+bwd ms | min-max ms | ratio | ' + ('/ clone | ' if floor else '') +
          'peak extra / logits | saved beyond inputs / logits |')
    print('|---|---:|---:|---:|' + ('---:|' if floor else '') + '---:|---:|')
    for r in results:
        vs_floor = f"{r['time'] / floor['time']:.2f} | " if floor else ''
        low, high = r['spread']
        print(f"| {r['name']} | {1e3 * r['time']:.2f} | {1e3 * low:.0f}-{1e3 * high:.0f} | "
              f"{r['time'] / ref['time']:.3f} | {vs_floor}{r['peak'] / nbytes:.2f} | "
              f"{r['saved'] / nbytes:.3f} |")


MIN_REPEATS, QUICK_REPEATS = 9, 3


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help=f'{QUICK_REPEATS} repeats at a tenth of the sizes (a smoke '
                        'run; overrides --repeats and the sizes)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads, >= 1')
    parser.add_argument('--repeats', type=int, default=9,
                        help=f'timed runs per contender, >= {MIN_REPEATS} (medians are '
                        'reported), or --quick')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='cpu or cuda')
    parser.add_argument('--anchors', type=int, default=200_000, help='RetinaNet-like rows')
    parser.add_argument('--num-classes', type=int, default=80)
    parser.add_argument('--seg-shape', type=int, nargs=4, default=[2, 19, 256, 512],
                        metavar=('B', 'C', 'H', 'W'))
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'])
    parser.add_argument('--lvis-anchors', type=int, default=20_000)
    parser.add_argument('--lvis-classes', type=int, default=1203)
    parser.add_argument('--ade-shape', type=int, nargs=4, default=[2, 150, 128, 256],
                        metavar=('B', 'C', 'H', 'W'))
    parser.add_argument('--only', choices=['sigmoid', 'lvis', 'softmax', 'ade'],
                        help='one group only (default: all four)')
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = QUICK_REPEATS
        args.anchors, args.lvis_anchors = args.anchors // 10, args.lvis_anchors // 10
        args.seg_shape[2:] = [max(8, d // 4) for d in args.seg_shape[2:]]
        args.ade_shape[2:] = [max(8, d // 4) for d in args.ade_shape[2:]]
    elif args.repeats < MIN_REPEATS:
        parser.error(f'--repeats must be >= {MIN_REPEATS} (the table reports medians), got '
                     f'{args.repeats}; --quick runs {QUICK_REPEATS} at smaller sizes')
    if args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    print(f'device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, '
          f'median of {args.repeats}')

    groups = [('Sigmoid (RetinaNet-like)', 'sigmoid', (args.anchors, args.num_classes)),
              ('Sigmoid, large vocabulary (LVIS-like)', 'lvis',
               (args.lvis_anchors, args.lvis_classes)),
              ('Softmax (DeepLab-like)', 'softmax', tuple(args.seg_shape)),
              ('Softmax, 150 classes (ADE20K-like)', 'ade', tuple(args.ade_shape))]
    for title, group, shape in groups:
        if args.only not in (None, group):
            continue
        kind = 'sigmoid' if group in ('sigmoid', 'lvis') else 'softmax'
        logits, results = run_group(kind, shape, args.repeats, device, dtype, gen)
        print_group(title, logits, results)
        del logits

if __name__ == '__main__':
    main()
