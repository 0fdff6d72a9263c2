"""Timing and memory of one forward + backward, shared by tools/benchmarks/benchmark_loss.py
and tools/gpu_check.py (torch only: gpu_check runs where OpenMMLab is absent)."""
import time

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
