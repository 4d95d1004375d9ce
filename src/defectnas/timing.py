"""``median_ms``: the one way every latency here is timed; ``interleaved_ms``: the one way models are
timed against each other; ``load_averages``: how busy the machine was, recorded beside timings;
``yield_idle_cpu_threads``: OpenMP threads that sleep rather than spin, for every command that times or trains.

Why one helper: compare's table, the search's latency reward and the benchmarks report
milliseconds that users set side by side, so they must all be taken the same way — warm-up
calls first (allocator, lazy initialisation, memo filling), then the median of timed calls,
optionally at a fixed number of torch threads.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable, Mapping, TypeVar

M = TypeVar("M")


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


def interleaved_ms(models: Mapping[str, M], time_one: Callable[[M], float], rounds: int = 3) -> dict[str, list[float]]:
    """``{name: [ms of round 1, …]}``: ``time_one(model)`` for every model in turn, ``rounds`` times.

    Why rounds that take the models in turn: a machine that gets busier or quieter during the
    timing then moves every model alike, so their ratio holds where timing one model after the
    other would not. Compare models by the median of their rounds; the rounds' range is the
    timing's own noise."""
    served: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            served[name].append(round(float(time_one(model)), 4))
    return served


def load_averages() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load averages (runnable processes), rounded to 0.01; None
    where the OS gives none. Recorded beside latencies, which a busy machine inflates."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def yield_idle_cpu_threads() -> bool:
    """Let torch's OpenMP threads sleep, not spin, while they wait (``OMP_WAIT_POLICY=PASSIVE``).

    Why: by default each OpenMP thread spins at every barrier; when other processes hold the
    cores (a shared laptop, a CI runner, a second job), every small op then waits for a
    descheduled thread. Measured on the 2-core development machine with a second job running
    (load ≈ 3.5): quickstart on the embedded sample took 7 min 37 s with torch's defaults, and
    81–98 s with passive waits (about the same as 1 thread), with the same results; a steady dl-gs
    epoch went from 8–29 s to 3 s. Only effective before torch is first imported in the process,
    and a value the user set wins. Returns whether it set the variable.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
