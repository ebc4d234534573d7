"""The scheduling of :meth:`Driver.apply_diffs <winlayer.driver.Driver.apply_diffs>`:
the imports of a chain of layers, several at a time, committed parent first.

Every layer runs on a worker thread of its own (at most `jobs` at once, taken in the
order given, so a layer's parent is always started before it). A layer whose parent is
one of the same call gets a ``wait_parent`` function: the native importer calls it before
the first thing that reads the parent and before its commit, so the layer is parsed and
written while its parent is still being written and commits only once the parent has.
A failure stops the layers after it (the earlier ones go on to their commits): a later
layer waiting for a parent that failed, or reporting progress, raises :class:`Aborted`,
and its writer leaves nothing behind.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .errors import WinlayerError

#: What runs one layer: `wait_parent` (None when the parent is committed already) and
#: `check` (raises :class:`Aborted` once an earlier layer failed; call it now and then).
Job = Callable[[Callable[[], None] | None, Callable[[], None]], None]


class Aborted(WinlayerError):
    """A layer's import stopped because another layer of the same operation failed."""


class _Gate:
    """Opens when a layer is committed, or fails with why it was not."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._failed = False

    def open(self) -> None:
        self._done.set()

    def fail(self) -> None:
        self._failed = True
        self._done.set()

    def wait(self) -> None:
        self._done.wait()
        if self._failed:
            raise Aborted("the parent layer's import failed")


def worker_count(jobs: int | None, layers: int) -> int:
    """How many layers run at once: `jobs` (default: the cores), at most `layers`."""
    return min(jobs or os.cpu_count() or 1, layers)


def run(jobs: Sequence[Job], parents: Sequence[int | None], workers: int) -> None:
    """Run `jobs`, `workers` at a time; ``parents[i]`` is the index of job i's parent
    among `jobs` (always lower than i), or None. Raises the first real failure, in job
    order, once every started job has ended."""
    if any(p is not None and not 0 <= p < i for i, p in enumerate(parents)):
        raise ValueError("a layer's parent must come before it")
    gates = [_Gate() for _ in jobs]
    lock = threading.Lock()
    first_failed = len(jobs)  # the lowest index of a job that failed

    def work(i: int) -> None:
        nonlocal first_failed

        def check() -> None:
            if first_failed < i:
                raise Aborted("an earlier layer of this operation failed")

        parent = parents[i]
        try:
            check()
            jobs[i](gates[parent].wait if parent is not None else None, check)
        except BaseException:
            with lock:
                first_failed = min(first_failed, i)
            gates[i].fail()
            raise
        gates[i].open()

    with ThreadPoolExecutor(
        max_workers=max(1, workers), thread_name_prefix="winlayer-apply"
    ) as pool:
        futures = [pool.submit(work, i) for i in range(len(jobs))]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None and not isinstance(error, Aborted):
            raise error
    for error in errors:
        if error is not None:
            raise error
