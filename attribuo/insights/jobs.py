"""Insights jobs: attribution work run off the event loop, in a bounded pool of threads.

Every fetch or attribute request becomes a :class:`Job`, whether the page
polls it (``/api/jobs``) or its HTTP request waits for it (``/api/fetch``).
Jobs run in two lanes of worker threads, chosen by the request's estimated
cost in model evaluations (``visualizer.estimate_cost``):

- ``light`` (:data:`LIGHT_WORKERS` = 2 threads): at most :data:`LIGHT_COST`
  (64) evaluations, e.g. Saliency on a few examples or Integrated Gradients
  with few steps on one. Such a job takes milliseconds on the digits example,
  so two threads keep the page responsive while heavy jobs run.
- ``heavy`` (:data:`HEAVY_WORKERS` threads): everything else. One thread per
  two CPU cores, at least 1 and at most 2: torch already spreads one
  attribution over the cores, so more threads only share the same cores
  and make each job slower.

Jobs beyond the workers wait in their lane's queue (at most :data:`MAX_ACTIVE`
unfinished jobs in all). A job is cancelled through its :class:`Progress`:
the visualizer checks it before every model evaluation.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .._engine.errors import ArgumentValueError
from .methods import RequestError
from .progress import Cancelled, Progress

LIGHT_COST = 64  # model evaluations; at or below: the light lane
LIGHT_WORKERS = 2
HEAVY_WORKERS = max(1, min(2, (os.cpu_count() or 2) // 2))
MAX_ACTIVE = 64  # queued or running jobs; more are refused (RunnerBusy)
MAX_KEPT = 256  # jobs in the table, finished ones included; the oldest finished go first
STATES = ("queued", "running", "done", "failed", "cancelled")

_log = logging.getLogger("attribuo.insights")

Work = Callable[[str, dict, Progress], Any]
Estimate = Callable[[str, dict], int]


class RunnerBusy(Exception):
    """Too many jobs are queued or running (the server answers 503)."""


class Job:
    """One request's work: its state, progress, and result or error.

    ``state`` is one of :data:`STATES`. ``status`` is the HTTP status a
    waiting route answers for a failed job: 400 for a refused request, 500
    for a bug.

    Example:
        >>> job = Job("fetch", {"method": "Saliency"}, cost=1, lane="light")
        >>> job.state, len(job.id)
        ('queued', 16)
    """

    def __init__(self, kind: str, request: dict, cost: int, lane: str) -> None:
        self.id = secrets.token_hex(8)
        self.kind = kind
        self.request = request
        self.cost = cost
        self.lane = lane
        self.progress = Progress()
        self.state = "queued"
        self.result: Any = None
        self.error: str | None = None
        self.status = 200
        self.created = self.seen = time.monotonic()
        self.began: float | None = None
        self.ended: float | None = None
        self._ended = threading.Event()  # set once no worker touches the job any more
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def finished(self) -> bool:
        """Whether the job's work is over (done, failed, or cancelled and stopped)."""
        return self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is finished (or ``timeout`` seconds); True if it is."""
        return self._ended.wait(timeout)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (in a worker thread) once the job is finished; now if it is."""
        with self._lock:
            if not self._ended.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def snapshot(self) -> dict[str, Any]:
        """The job as ``GET /api/jobs/<id>`` shows it."""
        counts = self.progress.snapshot()
        start = self.began if self.began is not None else time.monotonic()
        end = self.ended if self.ended is not None else time.monotonic()
        out = {"id": self.id, "kind": self.kind, "state": self.state, "done": counts["done"],
               "total": counts["total"], "elapsed": round(max(0.0, end - start), 3),
               "cost": self.cost}
        if self.state == "done":
            out["examples"] = self.result
        elif self.state == "failed":
            out["error"] = self.error
        return out

    def _finish(self) -> None:
        self.ended = time.monotonic()
        with self._lock:
            self._ended.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class JobRunner:
    """Runs jobs in two bounded lanes of worker threads and keeps a table of them by id.

    Args:
        work: ``work(kind, request, progress) -> result``, run in a worker thread.
        estimate: ``estimate(kind, request) -> model evaluations``; it may raise
            :class:`RequestError`, which :meth:`submit` passes on (nothing is queued).
        heavy_workers, light_workers, light_cost: the lanes (see the module docstring).
        debug: log the traceback of a job that fails with a bug.

    ``poll_timeout`` (15 s: a job nobody asked about for so long is cancelled)
    and ``keep_finished`` (60 s: finished jobs are forgotten after that) are
    attributes, so tests can shorten them. Threads start with the first job.

    Example:
        >>> runner = JobRunner(lambda kind, request, progress: [kind], lambda kind, request: 1)
        >>> job = runner.submit("fetch", {})
        >>> job.wait(10), job.state, job.result
        (True, 'done', ['fetch'])
        >>> runner.shutdown()
    """

    def __init__(self, work: Work, estimate: Estimate, heavy_workers: int = HEAVY_WORKERS,
                 light_workers: int = LIGHT_WORKERS, light_cost: int = LIGHT_COST,
                 debug: bool = False) -> None:
        self._work = work
        self._estimate = estimate
        self._sizes = {"heavy": max(1, heavy_workers), "light": max(1, light_workers)}
        self.light_cost = light_cost
        self.debug = debug
        self.poll_timeout = 15.0
        self.keep_finished = 60.0
        self.max_active = MAX_ACTIVE
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[Job]] = {"heavy": deque(), "light": deque()}
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._wake = threading.Event()  # wakes the janitor early at shutdown

    # ----- the public operations ----------------------------------------------------

    def submit(self, kind: str, request: dict) -> Job:
        """Estimate the request's cost, queue it in its lane and return the job.

        Raises :class:`RequestError` for a refused request, :class:`RunnerBusy`
        when :attr:`max_active` jobs are unfinished, RuntimeError after shutdown.
        """
        cost = int(self._estimate(kind, request))
        lane = "light" if cost <= self.light_cost else "heavy"
        job = Job(kind, request, cost, lane)
        with self._cond:
            if self._closed:
                raise RuntimeError("the job runner was shut down")
            active = sum(1 for j in self._jobs.values() if not j.finished)
            if active >= self.max_active:
                raise RunnerBusy(f"{active} jobs are queued or running; try again later")
            self._start_threads()
            self._jobs[job.id] = job
            self._queues[lane].append(job)
            self._trim()
            self._cond.notify_all()
        return job

    def get(self, ident: str) -> Job | None:
        """The job with id ``ident`` (None if unknown); counts as its client asking about it."""
        with self._cond:
            job = self._jobs.get(ident)
            if job is not None:
                job.seen = time.monotonic()
            return job

    def touch(self, job: Job) -> None:
        """Note that the job's client is still there (it is not cancelled for lack of polls)."""
        job.seen = time.monotonic()

    def cancel(self, ident: str) -> Job | None:
        """Cancel a job (None if unknown): a queued one at once, a running one at its next
        model evaluation. A finished job is left as it is."""
        with self._cond:
            job = self._jobs.get(ident)
            if job is None:
                return None
            job.seen = time.monotonic()
            queued = self._cancel_locked(job)
        if queued:
            job._finish()
        return job

    def forget(self, job: Job) -> None:
        """Drop a job from the table (a waiting route has answered with its result)."""
        with self._cond:
            if self._jobs.get(job.id) is job:
                del self._jobs[job.id]

    def jobs(self) -> list[Job]:
        """The jobs in the table, oldest first."""
        with self._cond:
            return list(self._jobs.values())

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel every job and stop the threads, waiting at most ``timeout`` seconds."""
        with self._cond:
            self._closed = True
            queued = [j for j in self._jobs.values() if self._cancel_locked(j)]
            self._cond.notify_all()
        for job in queued:
            job._finish()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # ----- internals (hold self._cond where noted) ----------------------------------

    def _cancel_locked(self, job: Job) -> bool:
        """Mark ``job`` cancelled; True if it was queued (the caller then finishes it)."""
        if job.state in ("done", "failed", "cancelled"):
            return False
        job.progress.cancel()
        was_queued = job.state == "queued"
        if was_queued:
            self._queues[job.lane].remove(job)
        job.state = "cancelled"  # shown at once; a running one stops at its next evaluation
        return was_queued

    def _trim(self) -> None:
        """Keep the table to MAX_KEPT jobs by dropping the oldest finished ones."""
        excess = len(self._jobs) - MAX_KEPT
        if excess > 0:
            old = [j for j in self._jobs.values() if j.finished][:excess]
            for job in old:
                del self._jobs[job.id]

    def _start_threads(self) -> None:
        if self._threads:
            return
        for lane, size in self._sizes.items():
            for k in range(size):
                thread = threading.Thread(target=self._serve, args=(lane,), daemon=True,
                                          name=f"attribuo-insights-{lane}-{k}")
                thread.start()
                self._threads.append(thread)
        janitor = threading.Thread(target=self._sweep, daemon=True, name="attribuo-insights-jobs")
        janitor.start()
        self._threads.append(janitor)

    def _serve(self, lane: str) -> None:
        queue = self._queues[lane]
        while True:
            with self._cond:
                while not queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = queue.popleft()
                job.state = "running"
                job.began = job.progress.started = time.monotonic()
            self._run(job)

    def _run(self, job: Job) -> None:
        state, result, error, status = "done", None, None, 200
        try:
            job.progress.check()
            result = self._work(job.kind, job.request, job.progress)
        except Cancelled:
            state = "cancelled"
        except (RequestError, ArgumentValueError) as exc:
            state, error, status = "failed", str(exc), 400
        except Exception as exc:  # a bug: reported in the job, not lost in a thread
            state, error, status = "failed", f"internal error: {type(exc).__name__}: {exc}", 500
            _log.warning("Insights %s job failed: %s", job.kind, error, exc_info=self.debug)
        with self._cond:
            if job.state != "cancelled":  # a cancel that came too late to stop it still wins
                job.state, job.result, job.error, job.status = state, result, error, status
        job._finish()

    def _sweep(self) -> None:
        """Cancel jobs nobody asks about; forget finished ones after ``keep_finished``."""
        while not self._closed:
            self._wake.wait(max(0.05, min(0.5, self.poll_timeout / 4, self.keep_finished / 4)))
            now = time.monotonic()
            stale = []
            with self._cond:
                for job in list(self._jobs.values()):
                    if job.finished:
                        if job.ended is not None and now - job.ended > self.keep_finished:
                            del self._jobs[job.id]
                    elif now - job.seen > self.poll_timeout and self._cancel_locked(job):
                        stale.append(job)
            for job in stale:
                job._finish()
