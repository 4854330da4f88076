"""Measuring what a function really used (peak GPU memory, or host memory on the CPU), to compare with the estimate."""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any


# --------------------------------------------------------------------------- measuring
def measure_peak_memory(fn: Callable[..., Any], *args: Any, device: Any = None, **kwargs: Any) -> tuple[Any, dict]:
    """Run ``fn(*args, **kwargs)``; return ``(result, stats)`` with the peak memory it used.

    On a CUDA ``device``: ``torch.cuda.max_memory_allocated`` after a reset (``peak_mib``).
    On the CPU: the peak of Python-level allocations seen by ``tracemalloc`` (torch's CPU
    tensors are not traced) is not enough, so ``peak_mib`` is the growth of the process's
    maximum resident set size (``ru_maxrss``) during the call -- zero when the process had
    already been that large -- and ``traced_mib`` the tracemalloc peak. ``seconds``: wall time.
    """
    import torch

    start = time.perf_counter()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        stats = {"device": str(device), "peak_mib": peak / 2**20, "growth_mib": (peak - base) / 2**20}
    else:
        before = _maxrss_bytes()
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            result = fn(*args, **kwargs)
            traced = tracemalloc.get_traced_memory()[1]
        finally:
            if not tracing:
                tracemalloc.stop()
        after = _maxrss_bytes()
        stats = {"device": "cpu", "peak_mib": (after - before) / 2**20, "maxrss_mib": after / 2**20,
                 "traced_mib": traced / 2**20}
    stats["seconds"] = time.perf_counter() - start
    return result, stats


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux
