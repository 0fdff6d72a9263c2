"""Is the GPU path right, and how fast is it? The first command to run on a GPU.

Needs only torch and Triton (no mmengine, mmdet or mmseg, nothing installed):
from a checkout,

    python tools/gpu_check.py                 # CUDA device 0, 1-3 minutes
    python tools/gpu_check.py --device cpu    # the accuracy part in Triton's CPU
                                              # interpreter, small shapes (CI runs this)

It prints three markdown tables (paste them into docs/results.md, "GPU"):

(a) accuracy: the Triton kernels against the PyTorch core in float64 on the
    same inputs, sigmoid and softmax modes, float32 and bfloat16, scalar and
    per-class gamma, ignored rows with row and class weights, 'none'
    reduction: max abs and max relative error (relative to the largest
    reference value) of the loss, d/d logits and d/d gamma, against stated
    tolerances, PASS or FAIL; and the first-use probe's verdict per mode/dtype;
(b) speed: forward + backward in ms, median of --repeats, at
    RetinaNet scale (1.875M anchors x 80 classes, sigmoid) and DeepLab scale
    (8 x 19 x 512 x 1024, softmax, 1/16 ignored), float32 and bfloat16, by
    tools/benchmarks/benchmark_loss.py's harness: against a clone() of the
    logits (the bandwidth floor), torchvision's sigmoid_focal_loss,
    F.binary_cross_entropy_with_logits and F.cross_entropy, and the PyTorch
    core on the same device (on CPU: tiny shapes, which test the script only);
(c) memory: peak memory above the inputs during forward + backward and the
    bytes kept for backward, in copies of the logits (the gradient itself is one).

Exit status 1 when any accuracy check fails.
"""
import argparse
import datetime
import math
import os
import os.path as osp
import sys
import time
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# tools/benchmarks/: the speed and memory harness (benchmark_loss.py, measure.py)
sys.path.insert(0, osp.join(ROOT, 'tools', 'benchmarks'))

# Tolerances of (a): max |triton - float64 core| / max |float64 core|. float32
# kernels agree to ~1e-6; bfloat16 logits are rounded before both run, and the
# gradient is stored in bfloat16 (8 bits of mantissa: 2^-8 = 3.9e-3).
TOLERANCE = {'float32': 1e-4, 'bfloat16': 1e-2}
RETINANET = (1_875_000, 80)
DEEPLAB = (8, 19, 512, 1024)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog=__doc__[__doc__.index('It prints'):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda',
                        help="'cuda' (default) or 'cpu' (Triton's interpreter: accuracy only)")
    parser.add_argument('--repeats', type=int, default=10, help='timed runs per row (median)')
    parser.add_argument('--skip-speed', action='store_true', help='only the accuracy table')
    return parser.parse_args(argv)


def _setup(device: str):
    """Import torch and dfl_mm for ``device`` (the interpreter for 'cpu')."""
    if device == 'cpu':
        os.environ.setdefault('TRITON_INTERPRET', '1')  # read when kernels are defined
    sys.path.insert(0, ROOT)
    import torch

    if device.startswith('cuda') and not torch.cuda.is_available():
        sys.exit('gpu_check: no CUDA device (use --device cpu for the interpreter check)')
    from dfl_mm import ops
    if not ops.triton_kernels.available():
        sys.exit('gpu_check: Triton is not installed')
    return torch, ops


def _case_inputs(torch, mode, dtype, variant, device, small):
    """(logits, labels, gamma, kwargs) of one accuracy case."""
    gen = torch.Generator().manual_seed(0)
    if mode == 'sigmoid':
        shape = (257, 37) if small else (8192, 80)
        labels = torch.randint(0, shape[1] + 1, (shape[0], ), generator=gen)
    else:
        shape = (2, 19, 6, 7) if small else (2, 19, 64, 96)
        labels = torch.randint(0, shape[1], (shape[0], ) + shape[2:], generator=gen)
    logits = 4 * torch.randn(shape, generator=gen)
    logits.view(-1)[:4] = torch.tensor([40.0, -40.0, 25.0, -25.0])  # the far tails
    kwargs = dict(use_sigmoid=mode == 'sigmoid', reduction='sum')
    gamma = torch.tensor(2.0)
    if variant == 'per-class gamma':
        gamma = torch.linspace(0.5, 4.0, shape[1])
    elif variant == 'ignore + weights':
        labels.view(-1)[::9] = 255
        kwargs.update(ignore_index=255, weight=torch.rand(labels.shape, generator=gen),
                      class_weight=(torch.rand(shape[1], generator=gen) + 0.5).tolist())
        if mode == 'sigmoid':
            kwargs['alpha'] = 0.25
    elif variant == "'none' reduction":
        kwargs['reduction'] = 'none'
    logits = logits.to(dtype=getattr(torch, dtype), device=device)
    if 'weight' in kwargs:
        kwargs['weight'] = kwargs['weight'].to(device)
    return logits, labels.to(device), gamma.to(device), kwargs


def _loss_and_grads(torch, logits, labels, gamma, kwargs, triton: bool):
    from dfl_mm import ops
    from dfl_mm.functional import dual_focal_loss
    z = logits.detach().clone().requires_grad_()
    g = gamma.detach().clone().requires_grad_()
    with ops.use('triton' if triton else 'reference'):  # strict: Triton or an error
        out = dual_focal_loss(z, labels, g, **kwargs)
        upstream = torch.rand(out.shape, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64).to(device=out.device, dtype=out.dtype)
        (out * upstream).sum().backward()
    return out.detach(), z.grad, g.grad


def accuracy_rows(device: str, small: bool):
    """One row per case: errors of the Triton kernels against the float64 core."""
    import torch
    rows = []
    for mode in ('sigmoid', 'softmax'):
        for dtype in ('float32', 'bfloat16'):
            for variant in ('scalar gamma', 'per-class gamma', 'ignore + weights',
                            "'none' reduction"):
                logits, labels, gamma, kwargs = _case_inputs(torch, mode, dtype, variant,
                                                             device, small)
                row = dict(mode=mode, dtype=dtype, case=variant, tol=TOLERANCE[dtype])
                reference = _loss_and_grads(torch, logits.double(), labels, gamma.double(),
                                            kwargs, triton=False)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter('ignore', RuntimeWarning)  # interpreter
                        got = _loss_and_grads(torch, logits, labels, gamma, kwargs,
                                              triton=True)
                except Exception as error:  # noqa: BLE001 - reported, not raised
                    row.update(error=f'{type(error).__name__}: {str(error)[:200]}',
                               ok=False)
                    rows.append(row)
                    continue
                worst = 0.0
                for name, g, r in zip(('loss', 'grad_logits', 'grad_gamma'), got,
                                      reference):
                    g, r = g.double().cpu(), r.cpu()
                    abs_err = (g - r).abs().max().item()
                    rel = abs_err / max(r.abs().max().item(), 1e-30)
                    row[name] = (abs_err, rel)
                    worst = max(worst, rel) if not math.isnan(rel) else math.inf
                row['ok'] = worst <= row['tol']
                rows.append(row)
    return rows


def _fmt_err(pair):
    return f'{pair[0]:.1e} / {pair[1]:.1e}'


def print_accuracy(rows, probes):
    print('(a) accuracy: Triton vs the PyTorch core in float64 '
          '(max abs / max relative error)\n')
    print('| mode | dtype | case | loss | d/d logits | d/d gamma | tolerance | result |')
    print('|---|---|---|---|---|---|---:|---|')
    for r in rows:
        if 'error' in r:
            cells = f"{r['error']} | | "
        else:
            cells = ' | '.join(_fmt_err(r[k]) for k in ('loss', 'grad_logits', 'grad_gamma'))
        print(f"| {r['mode']} | {r['dtype']} | {r['case']} | {cells} | {r['tol']:g} | "
              f"{'PASS' if r['ok'] else 'FAIL'} |")
    print('\nfirst-use probe (dfl_mm.ops.triton_kernels): ' + '; '.join(
        f'{k}: {"pass" if v is None else "FAIL (" + v + ")"}' for k, v in probes.items()))
    failed = sum(not r['ok'] for r in rows)
    print(f'\n{len(rows) - failed} of {len(rows)} accuracy checks passed')
    return failed


def speed(device: str, repeats: int, small: bool) -> None:
    """(b) and (c): tools/benchmarks/benchmark_loss.py's groups (one contender list,
    one way to pin a backend) at the CUDA shapes (``GPU_GROUPS``), float32 and bfloat16;
    on CPU at tiny shapes, which test this script only."""
    import torch

    import benchmark_loss as bench
    print('\n(b) speed and (c) memory: forward + backward, median ms; peak memory above '
          'the inputs and bytes kept for backward, in copies of the logits')
    if small:
        print('\nCPU: tiny shapes, the C kernel where Triton runs on CUDA: these rows '
              'test this script, they measure nothing')
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for title, kind, shape in bench.GPU_GROUPS:
            if small:
                shape = (shape[0] // 10000, shape[1]) if kind == 'sigmoid' else (1, 19, 8, 16)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)  # interpreter
                logits, results = bench.run_group(kind, shape, repeats, torch.device(device),
                                                  dtype, gen)
            bench.print_group(title, logits, results)


def main(argv=None):
    args = parse_args(argv)
    torch, ops = _setup(args.device)
    import triton
    started = time.time()
    name = (torch.cuda.get_device_name(0) if args.device.startswith('cuda') else
            'CPU (Triton interpreter)')
    print(f'# dfl_mm gpu_check, {datetime.date.today()}: {name}; torch {torch.__version__}, '
          f'triton {triton.__version__}\n')
    probes = {}
    for mode in ('sigmoid', 'softmax'):
        for dtype in (torch.float32, torch.bfloat16):
            key = f"{mode} {str(dtype).replace('torch.', '')}"
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)
                probes[key] = ops.triton_kernels.probe(args.device, dtype, mode == 'sigmoid')
    failed = print_accuracy(accuracy_rows(args.device, small=args.device == 'cpu'), probes)
    if not args.skip_speed:
        small = args.device == 'cpu'
        speed(args.device, 1 if small else args.repeats, small)
    print(f'\ntotal time {time.time() - started:.0f} s')
    return 1 if failed or any(v is not None for v in probes.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
