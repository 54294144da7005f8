"""Network calls off the UI thread: a small job runner whose results are collected by polling.

Slicer's MRML scene and Qt widgets may only be touched from the main thread, and a request can take
minutes. So a job's function runs on a worker thread and touches nothing but its own arguments; the
main thread calls ``JobRunner.poll()`` (the Widget does it from a ``qt.QTimer``), which hands finished
results to the job's callbacks on the main thread. A cancelled job's result is discarded, never
applied: the request itself may still finish on the server (HTTP cannot be taken back), but nothing
it returns reaches the scene.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Job:
    id: int
    description: str
    future: Future
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    started: float = field(default_factory=time.monotonic)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def running(self) -> bool:
        return not self.future.done()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class JobRunner:
    """Runs functions on worker threads; ``poll()`` on the main thread delivers their results."""

    def __init__(self, max_workers: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kneeai-job")
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)

    def submit(self, description: str, fn: Callable[..., Any], *args,
               on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None, **kwargs) -> Job:
        """Starts ``fn(*args, **kwargs)`` on a worker thread. The callbacks run later, inside
        ``poll()``, on whichever thread calls it."""
        job = Job(next(self._ids), description, self._pool.submit(fn, *args, **kwargs), on_done, on_error)
        self._jobs[job.id] = job
        return job

    def cancel(self, job: Job) -> None:
        """Marks the job cancelled: if it has not started it never will; if it has, its result is dropped."""
        job.cancel_event.set()
        job.future.cancel()

    def cancel_all(self) -> None:
        for job in list(self._jobs.values()):
            self.cancel(job)

    @property
    def active(self) -> list[Job]:
        """Jobs still running and not cancelled, oldest first: what the UI shows as 'running'."""
        return [j for j in self._jobs.values() if j.running and not j.cancelled]

    def poll(self) -> list[Job]:
        """Delivers every finished job's result to its callbacks; returns the jobs delivered."""
        delivered = []
        for job in [j for j in self._jobs.values() if j.future.done()]:
            del self._jobs[job.id]
            if job.cancelled or job.future.cancelled():
                continue
            error = job.future.exception()
            if error is not None:
                if job.on_error:
                    job.on_error(error)
            elif job.on_done:
                try:
                    job.on_done(job.future.result())
                except Exception as error:  # a result that cannot be applied fails its job, reported as such
                    if job.on_error is None:
                        raise
                    job.on_error(error)
            delivered.append(job)
        return delivered

    def wait(self, timeout: float) -> list[Job]:
        """Polls until no job is running or ``timeout`` passes (for tests and the command line, never
        for the UI thread, which polls from a timer instead)."""
        deadline = time.monotonic() + timeout
        delivered = self.poll()
        while any(j.running for j in self._jobs.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
            delivered += self.poll()
        return delivered + self.poll()

    def shutdown(self) -> None:
        self.cancel_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
