"""Stopping `atelier serve` with SIGTERM or Ctrl-C: training keeps its work, clients are told, exit 0."""
import signal
import threading
import time

import pytest
from conftest import launch

from engine import protocol
from engine.client import EngineError
from engine.store.checkpoints import ModelStore

TINY_SHAPE = {"resolution": 16, "width": 4, "latent_dim": 64}


def _train(client, name: str, steps_seen: list[int], enough: threading.Event, detach: bool = False):
    def on_progress(fraction, message, preview):
        if message.startswith("step") and "/" in message:
            steps_seen.append(int(message.split()[1].split("/")[0]))
            if len(steps_seen) >= 5:
                enough.set()

    # checkpoint_every far away: the only checkpoint this run can have is the one taken on shutdown
    params = {"kind": "shape", "name": name, "detach": detach, "data": {"procedural": 12}, "model": TINY_SHAPE,
              "train": {"steps": 100_000, "batch_size": 4, "checkpoint_every": 50_000, "log_every": 1}}
    return client.submit("train", params, on_progress=on_progress)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_training_checkpoints_at_the_current_step_and_exits_0(tmp_path, signum):
    engine = launch(tmp_path)
    try:
        client = engine.client("trainer")
        steps, enough = [], threading.Event()
        request = _train(client, "interrupted", steps, enough)
        assert enough.wait(120), engine.log()[-3000:]
        engine.process.send_signal(signum)
        with pytest.raises(EngineError) as caught:
            request.result(timeout=60)
        assert caught.value.code == protocol.SHUTTING_DOWN, caught.value
        assert "checkpoint" in caught.value.message
        assert engine.process.wait(timeout=60) == 0, engine.log()[-3000:]
    finally:
        if engine.process.poll() is None:
            engine.process.kill()
    assert "terminate called" not in engine.log()
    saved = ModelStore(engine.models_dir, builtin=None).metadata("interrupted")
    assert saved["step"] == max(steps) and saved["step"] < 50_000
    assert not (engine.state_dir / "engine.json").exists()


def test_detached_training_is_checkpointed_too_and_other_clients_are_told(tmp_path):
    engine = launch(tmp_path)
    try:
        owner, bystander = engine.client("owner"), engine.client("bystander")
        steps, enough = [], threading.Event()
        _train(owner, "detached", steps, enough, detach=True)
        assert enough.wait(120), engine.log()[-3000:]
        queued = owner.submit("device.benchmark", {"seconds": 60, "size": 64})
        started = time.monotonic()
        engine.process.send_signal(signal.SIGTERM)
        with pytest.raises(EngineError) as caught:
            queued.result(timeout=60)
        assert caught.value.code == protocol.SHUTTING_DOWN
        assert engine.process.wait(timeout=60) == 0, engine.log()[-3000:]
        assert time.monotonic() - started < 30
        # the bystander had nothing running: it learns of the shutdown when its connection closes
        with pytest.raises(EngineError) as caught:
            bystander.call("ping", timeout=10)
        assert caught.value.code in (protocol.SHUTTING_DOWN, "disconnected")
    finally:
        if engine.process.poll() is None:
            engine.process.kill()
    assert ModelStore(engine.models_dir, builtin=None).metadata("detached")["step"] >= 5


def test_a_second_signal_exits_at_once(tmp_path):
    engine = launch(tmp_path, {"OMP_NUM_THREADS": "1"})
    try:
        with engine.client() as client:
            # One 3072² product takes seconds on one thread and checks for cancellation only every
            # 4 products, so the first signal has a job to wait for.
            started = threading.Event()
            client.submit("device.benchmark", {"seconds": 600, "size": 3072},
                          on_progress=lambda f, m, p: started.set())
            assert started.wait(30)
            time.sleep(0.5)
            engine.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert engine.process.poll() is None, "the first signal should wait for the running job"
            t0 = time.monotonic()
            engine.process.send_signal(signal.SIGTERM)
            code = engine.process.wait(timeout=10)
            assert time.monotonic() - t0 < 3
            assert code == 128 + signal.SIGTERM
    finally:
        if engine.process.poll() is None:
            engine.process.kill()
    assert "exiting at once" in engine.log()
