"""The `atelier` command line, run as a user would: subprocesses, in-process and against an engine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import launch, stop


def atelier(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_import_engine_client_leaves_torch_out():
    code = ("import sys, engine.client, engine.protocol, engine.paths; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch" not in result.stdout


def test_building_the_command_line_leaves_torch_out():
    # Every kind's flags come from its ops module; its Config (and torch) load only when a command needs them.
    code = ("import sys; from engine.cli.main import build_parser; build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'trimesh', 'skimage'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_client_and_protocol_work_without_numpy():
    code = ("import sys; sys.modules['numpy'] = None\n"
            "from engine import protocol, client\n"
            "raw = protocol.RawArray('float32', (2,), bytes(8))\n"
            "frame = protocol.encode_frame({'type': 'x', 'a': raw})\n"
            "h, n = protocol.split_prefix(frame[:8])\n"
            "back = protocol.decode_body(frame[8:8 + h], frame[8 + h:])['a']\n"
            "assert isinstance(back, protocol.RawArray) and back.shape == (2,), back\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("command, words", [
    ([], ["serve", "models", "train", "generate", "eval", "demo", "jobs"]),
    (["serve"], ["--host", "--port", "loopback", "--device"]),
    (["models"], ["list", "delete", "--engine", "--json"]),
    (["train"], ["KIND", "--json"]),
    (["jobs"], ["detached", "--engine"]),
    (["demo"], ["--out"]),
    (["generate", "shape"], ["--encode", "--variations-of", "--interpolate", "--up", "--resolution", "--max-faces",
                             "--uvs", "--spread", "--steps"]),
])
def test_every_command_explains_itself(command, words):
    result = atelier(*command, "--help")
    assert result.returncode == 0
    for word in words:
        assert word in result.stdout


def test_models_in_process_with_json(tmp_path):
    result = atelier("models", "--json", env={"ATELIER_MODELS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["loaded"] == [] and all(m["builtin"] for m in listed["models"])
    missing = atelier("models", "info", "nope", "--json", env={"ATELIER_MODELS_DIR": str(tmp_path)})
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"] == "not_found"


def test_generate_and_eval_default_to_the_shipped_model(tmp_path):
    from engine.cli.main import build_parser

    from engine.kinds import DEFAULT_MODELS, default_model

    parser = build_parser()
    for kind in ("texture", "shape", "music"):
        assert parser.parse_args(["generate", kind]).model == default_model(kind)
        assert parser.parse_args(["eval", kind]).model == default_model(kind)
    assert parser.parse_args(["generate", "texture", "--model", "walls"]).model == "walls"
    made = atelier("generate", "texture", "--size", "64", "--out", str(tmp_path / "t.png"), "--json",
                   env={"ATELIER_MODELS_DIR": str(tmp_path)})
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["provenance"]["model"] == default_model("texture")
    assert (tmp_path / "t.png").stat().st_size > 0
    # The engine marks each kind's default in its list (the add-on's empty Model field uses it);
    # a preferred default that is not installed falls back to <kind>-default.
    listed = json.loads(atelier("models", "list", "--json", env={"ATELIER_MODELS_DIR": str(tmp_path)}).stdout)
    marked = {m["kind"]: m["name"] for m in listed["models"] if m.get("default")}
    assert marked == {kind: default_model(kind) for kind in ("texture", "shape", "music")}, marked
    assert all(m["builtin"] for m in listed["models"] if m.get("default"))
    assert default_model("texture") == DEFAULT_MODELS["texture"] == "texture-planks"  # colour, shipped


def test_common_flags_go_before_or_after_the_kind(tmp_path):
    # `atelier generate --models-dir D music` used D's parse and then lost it to the kind's own default.
    import shutil

    from engine.store.checkpoints import BUILTIN_DIR

    shutil.copy(BUILTIN_DIR / "music-default.safetensors", tmp_path / "mine.safetensors")
    for order in (("generate", "--models-dir", str(tmp_path), "music"), ("generate", "music", "--models-dir", str(tmp_path))):
        made = atelier(*order, "--model", "mine", "--bars", "1", "--out", str(tmp_path / "m.mid"), "--json")
        assert made.returncode == 0, (order, made.stdout, made.stderr)  # "mine" is only in tmp_path
        assert (tmp_path / "m.mid").stat().st_size > 0


def test_commands_against_a_running_engine(tmp_path):
    engine = launch(tmp_path)
    try:
        address = f"{engine.host}:{engine.port}"
        env = {"ATELIER_STATE_DIR": str(engine.state_dir)}
        listed = atelier("models", "--engine", address, "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert all(m["builtin"] for m in json.loads(listed.stdout)["models"])
        jobs = atelier("jobs", "--engine", address, env=env)
        assert jobs.returncode == 0 and "no jobs" in jobs.stdout
        unknown = atelier("jobs", "watch", "abc123", "--engine", address, env=env)
        assert unknown.returncode == 1 and "no job 'abc123'" in unknown.stderr
        wrong_token = atelier("models", "--engine", address, env={"ATELIER_STATE_DIR": str(tmp_path / "elsewhere")})
        assert wrong_token.returncode == 1 and "no engine token" in wrong_token.stderr
        busy = atelier("serve", "--port", str(engine.port), env=env, timeout=60)
        assert busy.returncode == 1 and "another engine" in busy.stderr
    finally:
        assert stop(engine) == 0
    assert not (engine.state_dir / "engine.json").exists()


def test_engine_alone_is_the_one_serve_recorded(tmp_path):
    engine = launch(tmp_path / "served")
    try:
        env = {"ATELIER_STATE_DIR": str(engine.state_dir)}
        listed = atelier("models", "--json", "--engine", env=env)
        assert listed.returncode == 0, listed.stderr
        assert all(m["builtin"] for m in json.loads(listed.stdout)["models"])
        # Elsewhere, with only engine.json: the recorded token file is the one used.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "engine.json").write_bytes((engine.state_dir / "engine.json").read_bytes())
        jobs = atelier("jobs", "--engine", env={"ATELIER_STATE_DIR": str(elsewhere)})
        assert jobs.returncode == 0 and "no jobs" in jobs.stdout, jobs.stderr
    finally:
        assert stop(engine) == 0
    gone = atelier("models", "--engine", env={"ATELIER_STATE_DIR": str(engine.state_dir)})
    assert gone.returncode == 1
    assert str(engine.state_dir / "engine.json") in gone.stderr and "atelier serve" in gone.stderr


def test_running_engine_is_none_without_a_readable_record(tmp_path):
    from engine import paths

    assert paths.running_engine(tmp_path) is None
    for text in ("", "{", "[]", '{"host": "127.0.0.1"}', '{"host": "127.0.0.1", "port": "x"}'):
        (tmp_path / "engine.json").write_text(text)
        assert paths.running_engine(tmp_path) is None, text
    (tmp_path / "engine.json").write_text('{"host": "127.0.0.1", "port": 5, "pid": 7, "token_file": "/t"}')
    assert paths.running_engine(tmp_path) == paths.RecordedEngine("127.0.0.1", 5, Path("/t"), 7)


def test_bad_engine_address_is_explained():
    result = atelier("models", "--engine", "localhost")
    assert result.returncode == 1 and "HOST:PORT" in result.stderr


def test_demo_says_plainly_what_it_made_and_what_is_missing(tmp_path):
    result = atelier("demo", "--out", str(tmp_path / "out"), "--json", timeout=300)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["failed"] == [], (report, result.stderr)
    assert report["engine"]["device"] == "cpu"
    made = report["made"]
    for path in made:
        assert os.path.getsize(path) > 0
    for kind in ("texture", "shape", "music"):
        gaps = [gap for gap in report["missing"] if gap["kind"] == kind]
        files = [p for p in made if os.path.basename(p).startswith(kind)]
        assert bool(gaps) != bool(files), f"{kind}: either made or said missing, never both or neither"
        assert all(gap["why"] for gap in gaps)
    assert set(os.listdir(tmp_path / "out")) == {os.path.basename(p) for p in made}


def test_generate_shape_names_what_is_wrong_with_its_mesh_files(tmp_path):
    env = {"ATELIER_MODELS_DIR": str(tmp_path)}
    missing = atelier("generate", "shape", "--variations-of", str(tmp_path / "nope.glb"), "--json", env=env)
    assert missing.returncode == 1 and "nope.glb" in json.loads(missing.stdout)["message"]
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
    flat = atelier("generate", "shape", "--encode", str(tmp_path / "flat.obj"), "--json", env=env)
    assert flat.returncode == 1 and "flat.obj: flat mesh" in json.loads(flat.stdout)["message"]
    both = atelier("generate", "shape", "--encode", "a.glb", "--variations-of", "b.glb", env=env)
    assert both.returncode == 1 and "not --encode and --variations-of" in both.stderr

