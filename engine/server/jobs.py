"""Jobs: compute that runs off the I/O loop, by priority, cancellable.

Three lanes, so that nothing long ever starves something live:
- LIVE (music streaming) has a worker of its own and may also use the general workers;
- INTERACTIVE (generation, evaluation, model loading) shares the general workers with LIVE,
  always taking the most urgent job first;
- TRAINING runs in its own slots and, through `JobContext.check()`, pauses between steps
  while any live or interactive work is queued or running.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.ops import Cancelled, JobFailed, Priority

log = logging.getLogger("atelier.jobs")


Listener = Callable[[dict], None]

# A job that calls torch in a tight Python loop (music draws a token at a time) drops the GIL for
# each op and takes it back before the waiting loop thread wakes, so the loop starved: 75-190 ms
# late on a 10 ms timer while a tiny model made 256 bars, and a cancel was read after the last
# bar. Sleeping 0.1 ms every 20 ms hands the GIL over (timer 11-20 ms late; generation no slower).
YIELD_EVERY_S = 0.02
YIELD_S = 0.0001


@dataclass(eq=False)
class Job:
    op: str
    priority: Priority
    run: Callable[["JobContext"], Any]
    owner: int | None = None
    detached: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "queued"  # queued | running | done | failed | cancelled
    fraction: float = 0.0
    message: str = ""
    created: float = field(default_factory=time.time)
    finished_at: float | None = None
    outcome: dict | None = None  # the final event: {"type": "result", ...} or {"type": "error", ...}
    cancel_event: threading.Event = field(default_factory=threading.Event)
    cancel_reason: tuple[str, str] = ("cancelled", "cancelled")  # (code, message) of the error it ends with
    listeners: list[Listener] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict:
        return {"job": self.id, "op": self.op, "priority": self.priority.name.lower(), "state": self.state,
                "fraction": self.fraction, "message": self.message, "detached": self.detached,
                "created": self.created}

    def add_listener(self, listener: Listener) -> None:
        """Subscribe to progress and the outcome; a late subscriber gets the outcome at once."""
        with self.lock:
            if self.outcome is None:
                self.listeners.append(listener)
                return
        listener(self.outcome)

    def remove_listener(self, listener: Listener) -> None:
        with self.lock:
            if listener in self.listeners:
                self.listeners.remove(listener)

    def emit(self, event: dict) -> None:
        with self.lock:
            listeners = list(self.listeners)
            if event["type"] != "progress":
                self.outcome = event
                self.listeners.clear()
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not take the job down
                log.exception("job listener failed")


class JobContext:
    """What a running job sees: report progress, notice cancellation, yield to urgent work."""

    def __init__(self, job: Job, scheduler: "Scheduler"):
        self.job = job
        self._scheduler = scheduler
        self._yielded = time.monotonic()

    @property
    def cancelled(self) -> bool:
        return self.job.cancel_event.is_set()

    def check(self) -> None:
        """Raise Cancelled if cancelled; a training job also waits here while urgent work runs.
        Now and then it sleeps a moment, so that the I/O loop gets the GIL (YIELD_EVERY_S)."""
        if time.monotonic() - self._yielded > YIELD_EVERY_S:
            time.sleep(YIELD_S)
            self._yielded = time.monotonic()
        if self.job.priority == Priority.TRAINING:
            self._scheduler.wait_while_urgent(self.job)
        if self.cancelled:
            raise Cancelled()

    def progress(self, fraction: float, message: str = "", preview: Any = None) -> None:
        self.job.fraction, self.job.message = float(min(max(fraction, 0.0), 1.0)), message
        event = {"type": "progress", "job": self.job.id, "fraction": self.job.fraction, "message": message}
        if preview is not None:
            event["preview"] = preview
        self.job.emit(event)
        self.check()


class Scheduler:
    def __init__(self, general_workers: int = 2, live_workers: int = 1, training_slots: int = 1,
                 keep_finished: int = 100):
        self._lock = threading.Condition()
        self._urgent: list[tuple[int, int, Job]] = []
        self._training: list[tuple[int, int, Job]] = []
        self._seq = itertools.count()
        self._urgent_running = 0
        self.jobs: dict[str, Job] = {}
        self._keep_finished = keep_finished
        self._stopping = False
        lanes = [("general", self._next_urgent)] * general_workers + [("live", self._next_live)] * live_workers
        lanes += [("training", self._next_training)] * training_slots
        self._threads = [threading.Thread(target=self._work, args=(take,), name=f"atelier-{name}-{i}", daemon=True)
                         for i, (name, take) in enumerate(lanes)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
            entry = (int(job.priority), next(self._seq), job)
            heapq.heappush(self._training if job.priority == Priority.TRAINING else self._urgent, entry)
            self._lock.notify_all()
        return job

    def cancel(self, job_id: str, reason: tuple[str, str] | None = None) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.outcome is not None:
            return False
        if reason:
            job.cancel_reason = reason
        job.cancel_event.set()
        with self._lock:
            queued = job.state == "queued"
            if queued:
                job.state = "cancelled"
            self._lock.notify_all()
        if queued:
            code, message = job.cancel_reason
            self._finish(job, "cancelled", {"type": "error", "code": code,
                                            "message": message if reason else "cancelled before it started"})
        return True

    def wait_while_urgent(self, job: Job) -> None:
        with self._lock:
            while not job.cancel_event.is_set() and not self._stopping and (
                    self._urgent_running or any(j.state == "queued" for _, _, j in self._urgent)):
                self._lock.wait(0.05)

    def stop(self, timeout: float = 30.0, code: str = "cancelled", why: str = "the engine is stopping") -> list[Job]:
        """Cancel every job and wait for the running ones to end; return those still running after `timeout`.

        A running training job ends by saving a checkpoint at its current step.
        """
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for job in list(self.jobs.values()):
            saves = job.priority == Priority.TRAINING and job.state == "running"
            self.cancel(job.id, (code, f"{why}; {job.op} stopped" + (
                " and saved a checkpoint at its current step: train again with resume to continue" if saves else "")))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [job for job in self.jobs.values() if job.state == "running"]

    def _next_urgent(self) -> Job | None:
        return self._pop(self._urgent)

    def _next_live(self) -> Job | None:
        if self._urgent and self._urgent[0][0] == Priority.LIVE:
            return self._pop(self._urgent)
        return None

    def _next_training(self) -> Job | None:
        return self._pop(self._training)

    @staticmethod
    def _pop(heap: list) -> Job | None:
        while heap:
            job = heapq.heappop(heap)[2]
            if job.state == "queued":
                return job
        return None

    def _work(self, take: Callable[[], Job | None]) -> None:
        while True:
            with self._lock:
                job = take()
                while job is None:
                    if self._stopping:
                        return
                    self._lock.wait()
                    job = take()
                job.state = "running"
                if job.priority != Priority.TRAINING:
                    self._urgent_running += 1
            try:
                self._run(job)
            finally:
                with self._lock:
                    if job.priority != Priority.TRAINING:
                        self._urgent_running -= 1
                    self._lock.notify_all()

    def _run(self, job: Job) -> None:
        context = JobContext(job, self)
        try:
            if job.cancel_event.is_set():
                raise Cancelled()
            value = job.run(context)
        except Cancelled:
            code, message = job.cancel_reason
            self._finish(job, "cancelled", {"type": "error", "code": code, "message": message})
        except JobFailed as e:
            self._finish(job, "failed", {"type": "error", "code": e.code, "message": e.message})
        except Exception:
            log.exception("job %s (%s) failed", job.id, job.op)
            self._finish(job, "failed", {"type": "error", "code": "internal",
                                         "message": f"{job.op} failed inside the engine; the engine log has the details"})
        else:
            self._finish(job, "done", {"type": "result", "job": job.id, "value": value})

    def _finish(self, job: Job, state: str, event: dict) -> None:
        job.state, job.finished_at = state, time.time()
        if state == "done":
            job.fraction = 1.0
        job.emit({**event, "job": job.id})
        self._forget_old()

    def _forget_old(self) -> None:
        with self._lock:
            finished = sorted((j for j in self.jobs.values() if j.finished_at), key=lambda j: j.finished_at)
            for job in finished[:max(0, len(finished) - self._keep_finished)]:
                del self.jobs[job.id]
