"""Shared fixtures: real engine processes on loopback, each with its own state and models folders."""
from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/support
# The JSB chorales split, for the tests that need it: $ATELIER_JSB_DIR, else the shared data
# folder beside this checkout (a user's clone has none; those tests then skip).
os.environ.setdefault("ATELIER_JSB_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "jsb"))

from engine.cli.demo import start_engine  # noqa: E402
from engine.client import Client  # noqa: E402


@dataclass
class RunningEngine:
    host: str
    port: int
    token: str
    models_dir: Path
    state_dir: Path
    process: object

    def client(self, name: str = "test", **kwargs) -> Client:
        return Client(self.host, self.port, token=self.token, name=name, **kwargs)

    def log(self) -> str:
        return (self.state_dir / "engine.log").read_text(errors="replace")


def launch(tmp: Path, extra_env: dict | None = None) -> RunningEngine:
    state, models = tmp / "state", tmp / "models"
    state.mkdir(parents=True, exist_ok=True)
    process, ready = start_engine("cpu", state, {"ATELIER_MODELS_DIR": str(models), **(extra_env or {})})
    token = Path(ready["token_file"]).read_text().strip()
    return RunningEngine(ready["host"], ready["port"], token, models, state, process)


def serve_with(tmp: Path, *flags: str, fd_limit: int | None = None) -> RunningEngine:
    """`atelier serve` in a process of its own with extra flags (and, optionally, a lower open-file limit)."""
    state, models = tmp / "state", tmp / "models"
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ATELIER_STATE_DIR": str(state), "ATELIER_MODELS_DIR": str(models)}
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))) if fd_limit else None
    with open(state / "engine.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", "--json", "--device",
                                    "cpu", *flags], stdout=subprocess.PIPE, stderr=log, env=env, preexec_fn=limit)
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else b""
    assert line, (state / "engine.log").read_text()
    info = json.loads(line)
    return RunningEngine(info["host"], info["port"], Path(info["token_file"]).read_text().strip(), models, state,
                         process)


def stop(engine: RunningEngine) -> int:
    engine.process.terminate()
    return engine.process.wait(timeout=30)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    running = launch(tmp_path_factory.mktemp("engine"))
    yield running
    assert running.process.poll() is None, "the engine died during the tests:\n" + running.log()[-3000:]
    assert stop(running) == 0
