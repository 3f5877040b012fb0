"""Training through the engine: detached runs outlive their client; the CLI resumes where a run stopped."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from engine import protocol
from engine.client import EngineError

TINY_SHAPE = {"resolution": 16, "width": 4, "latent_dim": 64}


def train_params(name: str, steps: int, detach: bool = False) -> dict:
    return {"kind": "shape", "name": name, "detach": detach, "data": {"procedural": 12},
            "model": TINY_SHAPE, "train": {"steps": steps, "batch_size": 4, "checkpoint_every": 5, "log_every": 1}}


def test_a_detached_training_job_survives_its_client(engine):
    owner = engine.client("trainer")
    running = threading.Event()
    request = owner.submit("train", train_params("detached", 100_000, detach=True),
                           on_progress=lambda fraction, message, preview: message.startswith("step") and running.set())
    assert running.wait(120), engine.log()[-2000:]
    job_id = request.job_id
    owner.close()

    with engine.client("someone-else") as other:
        jobs = {j["job"]: j for j in other.call("jobs.list")["jobs"]}
        assert jobs[job_id]["detached"] and jobs[job_id]["state"] == "running"
        steps = []
        progressed = threading.Event()

        def on_progress(fraction, message, preview):
            if message.startswith("step"):
                steps.append(int(message.split()[1].split("/")[0]))
                if len(steps) >= 3:
                    progressed.set()

        watch = other.submit("jobs.watch", {"job": job_id}, on_progress=on_progress)
        assert progressed.wait(120), "the detached job stopped making progress once its client left"
        assert other.call("jobs.cancel", {"job": job_id})["cancelled"] is True
        with pytest.raises(EngineError) as caught:
            watch.result(timeout=60)
        assert caught.value.code == protocol.CANCELLED
        saved = other.call("models.info", {"name": "detached"})["metadata"]
        assert saved["kind"] == "shape" and saved["step"] >= steps[-1]


def test_jobs_of_other_clients_cannot_be_cancelled_unless_detached(engine):
    with engine.client("a") as a, engine.client("b") as b:
        job = a.submit("device.benchmark", {"seconds": 30, "size": 64})
        while job.job_id is None:
            time.sleep(0.01)
        with pytest.raises(EngineError, match="not detached"):
            b.call("jobs.cancel", {"job": job.job_id})
        job.cancel()


def test_train_op_rejects_bad_settings_clearly(engine):
    with engine.client() as client:
        with pytest.raises(EngineError) as caught:
            client.call("train", {**train_params("bad", 5), "model": {"resolution": 15}})
        assert caught.value.code == protocol.BAD_PARAMS and "power of two" in caught.value.message
        with pytest.raises(EngineError) as caught:
            client.call("train", {**train_params("bad", 5), "kind": "sculpture"})
        assert caught.value.code == protocol.BAD_PARAMS and "shape" in caught.value.message
        with pytest.raises(EngineError) as caught:
            client.call("train", {**train_params("bad", 5), "train": {"optimizer": "lion"}})
        assert "optimizer must be one of" in caught.value.message


def test_the_same_request_trains_the_same_model(engine):
    # Initial weights come from the run's seed, not from whatever the engine drew before.
    def trained(name: str, seed: int = 0) -> str:
        params = train_params(name, 3)
        client.call("train", {**params, "train": {**params["train"], "seed": seed}}, timeout=300)
        return client.call("shape.sample", {"model": name, "seed": 0, "count": 1})["provenance"]["model_hash"]

    with engine.client() as client:
        first = trained("same-a")
        other = trained("same-other", seed=1)
        assert trained("same-b") == first != other


def test_cli_resume_continues_from_the_saved_step(tmp_path):
    env = {**os.environ, "ATELIER_MODELS_DIR": str(tmp_path)}
    base = [sys.executable, "-m", "engine", "train", "shape", "--procedural", "12", "--name", "resumable", "--json",
            "--set", "resolution=16", "--set", "width=4", "--set", "latent_dim=64", "--set", "log_every=1", "--batch-size", "4"]
    first = subprocess.run(base + ["--steps", "6"], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["step"] == 6
    second = subprocess.run(base + ["--steps", "10", "--resume"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["step"] == 10
    rows = [json.loads(line) for line in (tmp_path / "resumable.run" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 11))


def test_cli_trains_data_parallel_under_torchrun(tmp_path):
    env = {**os.environ, "ATELIER_MODELS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "engine",
               "train", "shape", "--procedural", "12", "--name", "parallel", "--json", "--set", "resolution=16",
               "--set", "width=4", "--set", "latent_dim=64", "--steps", "4", "--batch-size", "4"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = subprocess.run([sys.executable, "-m", "engine", "models", "info", "parallel", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    metadata = json.loads(listed.stdout)["metadata"]
    assert metadata["processes"] == 2 and metadata["step"] == 4
