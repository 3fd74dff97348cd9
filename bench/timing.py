"""Timing and memory helpers: variants timed round-robin in one process, medians reported."""
from __future__ import annotations

import os
import platform
import resource
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(variants: Dict[str, Callable[[int], object]], repeats: int, warmup: int,
                  device: torch.device, budget_s: Optional[float] = None) -> Dict[str, List[float]]:
    """Milliseconds per call of every variant, interleaved (A B C A B C ...) so that load from
    other processes and CPU frequency drift hit all variants alike. Each callable gets the
    iteration number (to cycle through frames). ``budget_s`` stops early (>= 3 samples each)."""
    for i in range(warmup):
        for run in variants.values():
            run(i)
    synchronize(device)
    samples: Dict[str, List[float]] = {name: [] for name in variants}
    start = time.perf_counter()
    for i in range(repeats):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run(i)
            synchronize(device)
            samples[name].append(1000.0 * (time.perf_counter() - t0))
        if budget_s is not None and i >= 2 and time.perf_counter() - start > budget_s:
            break
    return samples


def summary(samples: List[float]) -> dict:
    a = np.asarray(samples)
    return {"ms_median": float(np.median(a)), "ms_p10": float(np.percentile(a, 10)),
            "ms_p90": float(np.percentile(a, 90)), "n": int(a.size)}


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (since the last reset where supported)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_model()} ({torch.get_num_threads()} torch threads, {os.cpu_count()} logical CPUs)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
