"""Timing and memory of one forward + backward, shared by tools/benchmarks/benchmark_loss.py
and tools/gpu_check.py (torch only: gpu_check runs where OpenMMLab is absent)."""
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager

import torch

__all__ = ['sync', 'elapsed_ms', 'peak_extra_bytes']


def sync(device) -> None:
    """Wait for ``device`` (a torch.device or its name) to finish its queued work."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def elapsed_ms(run, device) -> float:
    """Wall time of ``run()`` in ms, the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return 1e3 * (time.perf_counter() - start)


def peak_extra_bytes(run, device) -> int:
    """Peak bytes allocated during ``run()`` beyond what was live before: the CUDA
    caching allocator's peak on a GPU, the torch profiler's memory events on CPU."""
    device = torch.device(device)
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profiler_noise_filtered():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    # every allocation (+bytes) and free (-bytes), in time order
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]'), key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


# What the CPU profiler's C++ side (kineto) prints on every start and stop on a
# host without a GPU: not failures, and not the benchmark's output.
PROFILER_NOISE = re.compile(r'USDT:|gpuGetDeviceCount failed|Memory block of unknown size')


@contextmanager
def profiler_noise_filtered():
    """Drop ``PROFILER_NOISE`` lines the profiler writes to file descriptor 2 inside
    the block; every other line is passed on to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode='w+b') as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors='replace').splitlines():
                if not PROFILER_NOISE.search(line):
                    print(line, file=sys.stderr)
