"""Where children run: in this process, in local worker processes, or as Ray tasks.

Why one interface: the search loop hands over a batch of children and consumes results as they
finish, and should not care where they ran. Every backend has
``map_unordered(jobs) -> iterator of (index, result)`` (in finishing order) and ``shutdown()``:

- ``SerialExecutor``: runs the children one by one in this process, each when the loop asks
  for the next result, so each is logged before the next starts (``--workers 1``, the tests).
- ``ProcessExecutor``: ``ProcessPoolExecutor`` with the *spawn* start method (no forked torch
  thread pools); each worker loads the data tables once from Parquet files in a temp folder.
- ``RayExecutor``: ``--ray-address ADDR`` (``auto``, ``local``, or ``ray://host:port``); the tables
  go into Ray's object store once and each child is a ``num_cpus=1`` task. Ray is imported only
  here, only when asked for. Final (top-k) models are written by the task to a folder under
  ``--out``, so a multi-node cluster needs ``--out`` on a shared filesystem.

Every backend also keeps a ledger of which tables' texts each of its processes has passed
through the frozen pre-trained layers (:class:`FrozenLedger`): those outputs are memoised per
process, so the first job of a process on a table pays that pass and later ones do not, and the
budget's estimates must know which case the next job is (a search resumed in a new process
pays it again, though its log's children did not).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ..errors import ConfigError, DataWarning
from .child import evaluate_child, init_worker


def job_tables(job: dict[str, Any]) -> set[str]:
    """The tables a job passes through the frozen layers: its train and valid tables, and test when it scores one."""
    return {name for name in (job.get("tables") or {}).values() if name}


class FrozenLedger:
    """Which tables' texts each process running jobs has memoised (their frozen pre-trained layers'
    outputs), read off the finished jobs: a result's ``pid`` (this process's when it has none)."""

    def __init__(self, parallelism: int) -> None:
        self.parallelism = max(1, parallelism)
        self.by_process: dict[int, set[str]] = {}

    def note(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        self.by_process.setdefault(int(result.get("pid") or os.getpid()), set()).update(job_tables(job))

    def warm(self) -> frozenset[str]:
        """Tables memoised in every process the next jobs may run in: as many processes as run at
        once must have passed them (a process not seen yet has memoised nothing)."""
        counts: dict[str, int] = {}
        for tables in self.by_process.values():
            for name in tables:
                counts[name] = counts.get(name, 0) + 1
        return frozenset(name for name, n in counts.items() if n >= self.parallelism)

    def noted(self, jobs: list[dict[str, Any]], results: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, result in results:
            self.note(jobs[i], result)
            yield i, result


class SerialExecutor:
    """Children run one after another in this process."""

    parallelism = 1

    def __init__(self, tables: dict[str, pd.DataFrame], threads: int = 1) -> None:
        from ..model.bert import memos_shared_between_models

        self.tables = tables
        self.threads = threads
        self.ledger = FrozenLedger(1)
        self._memos = ExitStack()  # children share frozen-layer memos until shutdown, not for the rest of the process
        self._memos.enter_context(memos_shared_between_models())

    def map_unordered(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        return self.ledger.noted(jobs, rewarned(
            (i, evaluate_child({**job, "threads": self.threads}, self.tables[job["tables"]["train"]],
                               self.tables[job["tables"]["valid"]], self.tables.get(job["tables"].get("test") or "")))
            for i, job in enumerate(jobs)))

    def shutdown(self) -> None:
        self._memos.close()


def rewarned(results: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each child's data warnings (``result["warnings"]``, see :func:`~.child.evaluate_child`)
    raised again here, in the search's process, as :class:`DataWarning`: the command line prints
    each distinct one once, as it does for the rest of a command's warnings."""
    for i, result in results:
        for text in result.pop("warnings", ()):
            warnings.warn(text, DataWarning, stacklevel=2)
        yield i, result


def _as_completed(futures: list[Future]) -> Iterator[tuple[int, dict[str, Any]]]:
    index = {f: i for i, f in enumerate(futures)}
    return rewarned((index[f], f.result()) for f in as_completed(futures))


class ProcessExecutor:
    """A spawn-based process pool; the tables travel once, as Parquet files."""

    def __init__(self, tables: dict[str, pd.DataFrame], workers: int, threads: int = 1) -> None:
        self.parallelism = workers
        self.ledger = FrozenLedger(workers)
        self._tmp = tempfile.TemporaryDirectory(prefix="defectnas-search-")
        paths = {}
        for name, df in tables.items():
            paths[name] = str(Path(self._tmp.name) / f"{name}.parquet")
            df.to_parquet(paths[name], index=False)
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=init_worker, initargs=(paths, threads))

    def map_unordered(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        return self.ledger.noted(jobs, _as_completed([self._pool.submit(evaluate_child, job) for job in jobs]))

    def shutdown(self) -> None:
        # wait=False: on an error or Ctrl-C do not sit out children still training; they exit after
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._tmp.cleanup()


class RayExecutor:
    """Children as Ray tasks (one CPU each) on a running cluster or a local one."""

    def __init__(self, tables: dict[str, pd.DataFrame], address: str, threads: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray-address needs Ray: pip install 'defectnas[ray]'") from None
        from ..serving.ray_build import check_reachable

        self.ray = ray
        if not ray.is_initialized():  # reuse a Ray the caller started (ray.init(num_cpus=2) in tests)
            check_reachable(address)  # one line at once, where ray.init retries an address that refuses for minutes
            try:
                ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                         log_to_driver=False, include_dashboard=False)
            except ConnectionError as e:  # auto with no cluster running: Ray's own message, in one line
                raise ConfigError(f"--ray-address {address}: {str(e).splitlines()[0]} (start one with `ray start --head`, "
                                  "or leave --ray-address out to train children on this machine)") from None
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.ledger = FrozenLedger(self.parallelism)
        self.threads = threads
        self._refs = {name: ray.put(df) for name, df in tables.items()}
        self._task = ray.remote(num_cpus=1, max_retries=1)(evaluate_child)

    def map_unordered(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        futures = []
        for job in jobs:
            names = job["tables"]
            test = self._refs[names["test"]] if names.get("test") else None
            ref = self._task.remote({**job, "threads": self.threads}, self._refs[names["train"]], self._refs[names["valid"]], test)
            futures.append(ref.future())
        return self.ledger.noted(jobs, _as_completed(futures))

    def shutdown(self) -> None:
        self._refs.clear()  # the cluster itself belongs to whoever started it


def make_executor(tables: dict[str, pd.DataFrame], workers: int, ray_address: str = "", threads: int = 1):
    """The backend for ``--workers N`` / ``--ray-address ADDR``; ``threads``: torch threads per child."""
    if ray_address:
        return RayExecutor(tables, ray_address, threads=threads)
    if workers > 1:
        return ProcessExecutor(tables, workers, threads=threads)
    return SerialExecutor(tables, threads=threads)
