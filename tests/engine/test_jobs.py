"""The scheduler's promises: live work is never starved, training yields, cancel reaches queued jobs."""
import threading
import time

from engine.ops import Priority
from engine.server.jobs import Job, Scheduler


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def outcome_of(job: Job) -> dict:
    assert wait_for(lambda: job.outcome is not None), f"{job.op} never finished"
    return job.outcome


def busy_until(event: threading.Event):
    def run(context):
        while not event.is_set():
            context.check()
            time.sleep(0.005)
        return "done"
    return run


def test_live_work_runs_while_every_general_worker_is_busy():
    scheduler = Scheduler(general_workers=2)
    release = threading.Event()
    blockers = [scheduler.submit(Job("big texture", Priority.INTERACTIVE, busy_until(release))) for _ in range(3)]
    assert wait_for(lambda: sum(j.state == "running" for j in blockers) == 2)
    live = scheduler.submit(Job("next beats", Priority.LIVE, lambda context: "notes"))
    assert outcome_of(live)["value"] == "notes"
    assert blockers[2].state == "queued"
    release.set()
    for job in blockers:
        assert outcome_of(job)["type"] == "result"
    scheduler.stop()


def test_training_pauses_while_interactive_work_runs():
    scheduler = Scheduler(general_workers=1)
    steps = []
    stop = threading.Event()

    def training(context):
        while not stop.is_set():
            context.check()
            steps.append(time.monotonic())
            time.sleep(0.002)

    train = scheduler.submit(Job("train", Priority.TRAINING, training))
    assert wait_for(lambda: len(steps) > 5)
    release = threading.Event()
    generate = scheduler.submit(Job("generate", Priority.INTERACTIVE, busy_until(release)))
    assert wait_for(lambda: generate.state == "running")
    time.sleep(0.05)
    paused_at = len(steps)
    time.sleep(0.3)
    assert len(steps) <= paused_at + 1, "training kept stepping while interactive work ran"
    release.set()
    outcome_of(generate)
    assert wait_for(lambda: len(steps) > paused_at + 5), "training did not resume"
    stop.set()
    outcome_of(train)
    scheduler.stop()


def test_urgent_jobs_are_taken_by_priority():
    scheduler = Scheduler(general_workers=1, live_workers=0)
    release = threading.Event()
    first = scheduler.submit(Job("occupy", Priority.INTERACTIVE, busy_until(release)))
    assert wait_for(lambda: first.state == "running")
    order = []
    later = scheduler.submit(Job("interactive", Priority.INTERACTIVE, lambda c: order.append("interactive")))
    live = scheduler.submit(Job("live", Priority.LIVE, lambda c: order.append("live")))
    release.set()
    outcome_of(later), outcome_of(live)
    assert order == ["live", "interactive"]
    scheduler.stop()


def test_cancel_reaches_queued_and_running_jobs():
    scheduler = Scheduler(general_workers=1, live_workers=0)
    never = threading.Event()
    running = scheduler.submit(Job("running", Priority.INTERACTIVE, busy_until(never)))
    queued = scheduler.submit(Job("queued", Priority.INTERACTIVE, busy_until(never)))
    assert wait_for(lambda: running.state == "running")
    assert scheduler.cancel(queued.id) and scheduler.cancel(running.id)
    assert outcome_of(queued)["code"] == "cancelled" and outcome_of(running)["code"] == "cancelled"
    assert not scheduler.cancel(running.id), "cancelling a finished job reports nothing to cancel"
    scheduler.stop()


def test_a_failing_job_reports_without_its_traceback():
    scheduler = Scheduler()

    def broken(context):
        raise KeyError("secret internals")

    outcome = outcome_of(scheduler.submit(Job("broken", Priority.INTERACTIVE, broken)))
    assert outcome["code"] == "internal" and "secret" not in outcome["message"]
    scheduler.stop()
