"""``median_ms``: the one way every latency here is timed.

Why one helper: compare's table, the search's latency reward and the benchmarks report
milliseconds that users set side by side, so they must all be taken the same way — warm-up
calls first (allocator, lazy initialisation, memo filling), then the median of timed calls,
optionally at a fixed number of torch threads.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def median_ms(call: Callable[[], Any], repeats: int, threads: int | None = None, warmup: int = 2) -> float:
    """Median milliseconds of ``repeats`` calls after ``warmup`` untimed ones; at ``threads`` torch threads if given."""
    before = None
    if threads is not None:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            call()
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    finally:
        if before is not None:
            torch.set_num_threads(before)
    return 1000.0 * statistics.median(times)
