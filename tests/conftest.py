"""Shared fixtures: real engine processes on loopback, each with its own state and models folders."""
from __future__ import annotations

import os
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


def stop(engine: RunningEngine) -> int:
    engine.process.terminate()
    return engine.process.wait(timeout=30)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    running = launch(tmp_path_factory.mktemp("engine"))
    yield running
    assert running.process.poll() is None, "the engine died during the tests:\n" + running.log()[-3000:]
    assert stop(running) == 0
