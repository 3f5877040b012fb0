"""`atelier demo`: start an engine headless and make one result with every model that ships."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine import paths
from engine.client import Client, EngineError
from engine.kinds import default_model, kind_module

# What the demo makes with each kind once a model of that kind ships with Atelier.
DEMO_KINDS = {"texture": "a seamless texture PNG", "shape": "a watertight mesh", "music": "a MIDI file"}


def start_engine(device: str, state_dir: Path, extra_env: dict[str, str] | None = None,
                 timeout: float = 60) -> tuple[subprocess.Popen, dict]:
    """Start `atelier serve` on a free loopback port; return the process and its ready line.

    The engine's log goes to `state_dir/engine.log`.
    """
    env = {**os.environ, "ATELIER_STATE_DIR": str(state_dir), **(extra_env or {})}
    started = time.monotonic()
    log = open(state_dir / "engine.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", "--json",
                                "--device", device], stdout=subprocess.PIPE, stderr=log, env=env)
    log.close()
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else b""
    if not line:
        process.kill()
        process.wait()
        tail = (state_dir / "engine.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the engine did not start within {timeout} s:\n{tail}")
    return process, {**json.loads(line), "seconds_to_ready": round(time.monotonic() - started, 2)}


def run(out: Path, device: str, as_json: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"out": str(out.resolve()), "made": [], "missing": [], "failed": []}
    with tempfile.TemporaryDirectory(prefix="atelier-demo-") as state:
        process, ready = start_engine(device, Path(state))
        try:
            with Client(ready["host"], ready["port"], token=paths.read_token(Path(ready["token_file"])),
                        name="atelier-demo") as engine:
                report["engine"] = {"version": engine.info["engine"], "device": engine.info["device"],
                                    "seconds_to_ready": ready["seconds_to_ready"]}
                shipped = [m for m in engine.call("models.list")["models"] if m.get("builtin")]
                for kind, what in DEMO_KINDS.items():
                    models = sorted((m["name"] for m in shipped if m.get("kind") == kind),
                                    key=lambda name: name != default_model(kind))
                    if kind not in engine.info["capabilities"]["kinds"] or not models:
                        report["missing"].append({"kind": kind, "what": what,
                                                  "why": "no model of this kind ships with Atelier yet"})
                        continue
                    try:
                        report["made"].extend(str(p) for p in kind_module(kind).demo(engine, models[0], out))
                    except EngineError as e:  # one broken kind must not keep the others from the user
                        report["failed"].append({"kind": kind, "what": what, "why": e.message})
        finally:
            process.terminate()
            process.wait(timeout=30)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        info = report["engine"]
        print(f"Atelier engine {info['version']} started headless on {info['device']} "
              f"(ready in {info['seconds_to_ready']} s) and stopped again.")
        for path in report["made"]:
            print(f"made {path}")
        for gap in report["missing"]:
            print(f"not made: {gap['what']} ({gap['kind']}): {gap['why']}")
        for failure in report["failed"]:
            print(f"FAILED: {failure['what']} ({failure['kind']}): {failure['why']}")
        print(f"output folder: {report['out']}")
    return 1 if report["failed"] else 0
