"""The job queue: one worker thread samples one job at a time, in arrival order.

Two samplers at once on a small CPU only make both slower, so concurrent requests wait in line
and see their position. Each job writes into its own folder under the app's temporary folder;
the folders of all but the newest ``keep`` finished jobs are deleted.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cmmd.apps.genapp.inputs import GenRequest
from cmmd.apps.genapp.work import Progress, Result
from cmmd.errors import CmmdError

State = Literal["queued", "running", "done", "failed"]
# (job, its folder, progress) -> results
Work = Callable[["Job", Path, Progress], list[Result]]
log = logging.getLogger(__name__)


class QueueFull(CmmdError):
    """More jobs waiting than the queue takes."""


@dataclass
class Job:
    """A request in the queue and, once it ran, its progress, results or error."""

    id: str
    request: GenRequest
    folder: Path
    submitted: float = field(default_factory=time.monotonic)
    state: State = "queued"
    variation: int = 0
    step: int = 0
    steps: int = 0
    started: float | None = None
    finished: float | None = None
    error: str = ""
    results: list[Result] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def elapsed(self) -> float:
        """Seconds sampling (so far, or in all once finished); 0 while queued."""
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def status(self, position: int) -> dict[str, Any]:
        """JSON-able state for the page and the API (file names, not paths)."""
        return {"id": self.id, "state": self.state, "position": position, "variation": self.variation + 1,
                "variations": self.request.variations, "step": self.step, "steps": self.steps,
                "elapsed": round(self.elapsed(), 2), "error": self.error,
                "results": [vars(r) for r in self.results]}


class JobQueue:
    """Runs ``work`` on submitted jobs in a single worker thread; ``start`` and ``close`` it."""

    def __init__(self, work: Work, root: Path, max_waiting: int = 16, keep: int = 32) -> None:
        self.work, self.root = work, root
        self.max_waiting, self.keep = max_waiting, keep
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._finished: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cmmd-app-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop after the running job; waiting jobs are dropped."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, request: GenRequest) -> Job:
        """Queue ``request``; :class:`QueueFull` when ``max_waiting`` jobs already wait."""
        with self._wake:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"the queue is full ({self.max_waiting} jobs waiting); try again later")
            job = Job(secrets.token_urlsafe(12), request, self.root / "jobs" / secrets.token_hex(8))
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._wake.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1 for the next job to run, 2 for the one after, ...; 0 once it runs or ran."""
        with self._wake:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return 0

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                job.state, job.started = "running", time.monotonic()
            self._execute(job)
            with self._wake:
                self._finished.append(job)
                while len(self._finished) > self.keep:
                    old = self._finished.popleft()
                    del self._jobs[old.id]
                    shutil.rmtree(old.folder, ignore_errors=True)

    def _execute(self, job: Job) -> None:
        """Run one job; its failure is recorded on the job, never raised (the worker goes on)."""

        def progress(variation: int, step: int, steps: int) -> None:
            job.variation, job.step, job.steps = variation, step, steps

        try:
            job.folder.mkdir(parents=True)
            job.results = self.work(job, job.folder, progress)
            job.state = "done"
        except CmmdError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # the server stays up whatever one job does
            log.exception("job %s failed", job.id)
            job.error, job.state = f"internal error ({type(exc).__name__}: {exc})", "failed"
        finally:
            job.finished = time.monotonic()
            job.request.condition, job.request.panels = None, []  # the decoded input is no longer needed
            job.done.set()
