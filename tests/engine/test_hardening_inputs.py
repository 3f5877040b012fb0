"""Engine hardening (issue 24): authentication that cannot turn off, and errors with stable codes."""
from __future__ import annotations

import stat
import subprocess
import sys
import time

import pytest
import torch
from conftest import launch, stop
from support.wire import RawConnection

from engine import paths, protocol
from engine.client import EngineError


@pytest.mark.parametrize("content", ["", "\n", "short", "x" * 40 + " with spaces"])
def test_an_empty_or_malformed_token_file_is_replaced_and_an_empty_token_refused(tmp_path, content):
    token_file = tmp_path / "state" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(content)
    engine = launch(tmp_path)
    try:
        assert paths.token_problem(engine.token) is None and engine.token != content.strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert "writing a fresh token" in engine.log()
        for sent in ("", content.strip()):
            raw = RawConnection(engine.host, engine.port)
            reply = raw.hello(sent)
            assert reply["type"] == "error" and reply["code"] == protocol.AUTH_FAILED, reply
            assert raw.is_closed_by_peer()
            raw.close()
        with engine.client() as client:
            assert client.call("ping")["time"] > 0
    finally:
        assert stop(engine) == 0


def test_a_valid_token_survives_restarts_and_no_temp_is_left(tmp_path):
    token_file = tmp_path / "token"
    first = paths.ensure_token(token_file)
    assert paths.ensure_token(token_file) == first == paths.read_token(token_file)
    assert [p.name for p in tmp_path.iterdir()] == ["token"]
    token_file.write_text("")
    with pytest.raises(ValueError, match="empty"):
        paths.read_token(token_file)


TINY_SHAPE_TRAINING = {"kind": "shape", "data": {"procedural": 8}, "model": {"resolution": 8, "width": 2, "latent_dim": 64},
                       "train": {"steps": 3, "batch_size": 4, "log_every": 1, "checkpoint_every": 100}}


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "x" * 65])
def test_a_bad_model_name_in_train_is_bad_params(engine, name):
    with engine.client() as client, pytest.raises(EngineError) as caught:
        client.call("train", {**TINY_SHAPE_TRAINING, "name": name}, timeout=60)
    assert caught.value.code == protocol.BAD_PARAMS and "bad model name" in caught.value.message


def test_a_full_disk_during_training_is_disk_full(engine):
    run_dir = engine.models_dir / "full.run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.jsonl").symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    with engine.client() as client, pytest.raises(EngineError) as caught:
        client.call("train", {**TINY_SHAPE_TRAINING, "name": "full"}, timeout=120)
    assert caught.value.code == protocol.DISK_FULL and "no space left" in caught.value.message
    with engine.client() as client:
        assert client.call("ping")["time"] > 0


def _crafted_model(path, metadata_json: str) -> None:
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(path), metadata={"atelier": metadata_json})


BAD_MODEL_FILES = {  # file name -> (metadata JSON, what the listing's error says)
    "x.run": ('{"kind": "shape", "metrics": {}}', "not named as a model"),
    "nan": ('{"kind": "shape", "metrics": {"loss": NaN, "iou": Infinity}}', None),
    "huge": ('{"kind": "shape", "metrics": {"pad": "' + "x" * (1 << 20) + '"}}', "over the limit"),
    "deep": ('{"kind": "shape", "metrics": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", "nested deeper"),
    "abyss": ('{"kind": "shape", "metrics": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deep"),
}


def test_the_model_listing_survives_crafted_files(tmp_path):
    engine = launch(tmp_path)
    try:
        with engine.client() as client:
            for name, (metadata, _) in BAD_MODEL_FILES.items():
                _crafted_model(engine.models_dir / f"{name}.safetensors", metadata)
            listed = {m["name"]: m for m in client.call("models.list")["models"]}
            assert listed["shape-default"]["kind"] == "shape" and "error" not in listed["shape-default"]
            assert listed["nan"]["metrics"] == {"loss": None, "iou": None} and "error" not in listed["nan"]
            for name, (_, reason) in BAD_MODEL_FILES.items():
                if reason:
                    assert reason in listed[name]["error"], listed[name]
            for name in ("huge", "deep", "abyss"):
                with pytest.raises(EngineError) as caught:
                    client.call("models.info", {"name": name})
                assert caught.value.code == protocol.MODEL_CORRUPT
            assert client.call("models.info", {"name": "nan"})["metadata"]["metrics"]["loss"] is None
    finally:
        assert stop(engine) == 0


def test_a_temp_left_by_a_killed_resume_save_is_removed_at_engine_start(tmp_path):
    run_dir = tmp_path / "models" / "victim.run"
    writer = subprocess.Popen([sys.executable, "-c", RESUME_SAVER, str(run_dir / "resume.safetensors")],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "saving"
    deadline = time.monotonic() + 20
    while not list(run_dir.glob(".*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.001)
    writer.kill()
    writer.wait()
    left = list(run_dir.glob(".*.tmp"))
    assert left and left[0].stat().st_size > 0, "the kill did not land inside a save"
    engine = launch(tmp_path)
    try:
        assert not list(run_dir.glob(".*.tmp")) and "interrupted" in engine.log()
    finally:
        assert stop(engine) == 0


# Saves a resume state (5.5 MB, as a small training run's) again and again, until killed.
RESUME_SAVER = """
import sys, torch
from pathlib import Path
from engine.store.checkpoints import save_file
print("saving", flush=True)
while True:
    save_file(Path(sys.argv[1]), {"net.w": torch.randn(1_400_000)}, {"kind": "shape", "step": 1})
"""


def _peak_rss_mb(pid: int) -> float:
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(status["VmHWM"].split()[0]) / 1024


def test_a_small_tiff_that_decodes_to_12000_squared_is_refused_without_gigabytes(engine):
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    tiles = (np.pad(rng.integers(0, 255, (30, 30), dtype=np.uint8), ((0, 482), (0, 482))) for _ in range(24 * 24))
    bomb = engine.models_dir / "exemplars" / "bomb.tif"  # a folder this engine reads from
    bomb.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(bomb, tiles, shape=(12000, 12000), dtype=np.uint8, tile=(512, 512), compression="zlib")
    assert bomb.stat().st_size < 1_000_000
    with engine.client() as client:
        client.call("models.load", {"name": "texture-default"}, timeout=60)
        before = _peak_rss_mb(engine.process.pid)
        started = time.monotonic()
        with pytest.raises(EngineError) as caught:
            client.call("texture.eval", {"model": "texture-default", "images": str(bomb)}, timeout=60)
        seconds = time.monotonic() - started
    extra = _peak_rss_mb(engine.process.pid) - before
    print(f"refused in {seconds:.2f} s, peak RSS +{extra:.0f} MB")
    assert caught.value.code == protocol.BAD_PARAMS and "12000x12000" in caught.value.message
    assert "too large" in caught.value.message and seconds < 5 and extra < 100


def _copy_with_config(engine, source: str, name: str, **config) -> None:
    """A copy of a shipped model whose stored config is changed (its content hash covers only the tensors)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from engine.store.checkpoints import BUILTIN_DIR
    path = BUILTIN_DIR / f"{source}.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = json.loads(f.metadata()["atelier"])
    metadata["config"].update(config)
    save_file(load_file(str(path)), str(engine.models_dir / f"{name}.safetensors"),
              metadata={"atelier": json.dumps(metadata)})


def test_a_crafted_config_is_refused_before_the_model_is_built(engine):
    _copy_with_config(engine, "shape-default", "crafted-wide", width=512)  # 1.5 GB of parameters if built
    _copy_with_config(engine, "shape-default", "crafted-mismatch", width=32)  # within bounds, not its weights
    with engine.client() as client:
        client.call("ping")
        before = _peak_rss_mb(engine.process.pid)
        started = time.monotonic()
        with pytest.raises(EngineError) as wide:
            client.call("models.load", {"name": "crafted-wide"}, timeout=60)
        seconds = time.monotonic() - started
        extra = _peak_rss_mb(engine.process.pid) - before
        with pytest.raises(EngineError) as mismatch:
            client.call("models.load", {"name": "crafted-mismatch"}, timeout=60)
        with pytest.raises(EngineError) as train:
            client.call("train", {**TINY_SHAPE_TRAINING, "name": "wide", "model": {"width": 10**6}}, timeout=60)
        with pytest.raises(EngineError) as sample:  # every op loads through the same checks, not only models.load
            client.call("shape.sample", {"model": "crafted-wide", "seed": 1}, timeout=60)
        assert client.call("models.load", {"name": "shape-default"}, timeout=60)["kind"] == "shape"
    print(f"refused in {seconds:.2f} s, peak RSS +{extra:.0f} MB")
    assert sample.value.code == protocol.TOO_LARGE
    assert wide.value.code == protocol.TOO_LARGE and "width = 512" in wide.value.message and "1..64" in wide.value.message
    assert seconds < 10 and extra < 200
    assert mismatch.value.code == protocol.MODEL_CORRUPT and "does not match its weights" in mismatch.value.message
    assert train.value.code == protocol.TOO_LARGE and "width = 1000000" in train.value.message


def test_config_bounds_refuse_huge_values_and_admit_every_shipped_model(tmp_path):
    from engine.config import ConfigOutOfBounds, build
    from engine.kinds import kind_module
    from engine.store.checkpoints import ModelStore

    store = ModelStore(tmp_path)  # empty: the shipped models only
    assert store.names()
    for name in store.names():
        metadata = store.metadata(name)
        build(kind_module(metadata["kind"]).config_class(), metadata["config"])
    with pytest.raises(ConfigOutOfBounds, match="width = 1000000 is outside its bounds 1..64") as caught:
        build(kind_module("shape").config_class(), {"width": 10**6})
    assert caught.value.too_large


def test_models_loaded_ahead_of_use_on_a_fresh_engine_then_run(tmp_path):
    # models.load checks a model by building it on the meta device first; a kind whose modules were
    # first imported there once kept a meta tensor, and every texture.generate after failed
    running = launch(tmp_path)
    try:
        with running.client() as client:
            shipped = [m["name"] for m in client.call("models.list")["models"]]
            for name in shipped:
                client.call("models.load", {"name": name}, timeout=60)
            textures = [name for name in shipped if name.startswith("texture-")]
            for name in textures:
                image = client.call("texture.generate", {"model": name, "width": 32, "seed": 1}, timeout=60)["image"]
                assert image.shape[:2] == (32, 32)
            assert client.call("shape.sample", {"model": "shape-default", "seed": 1, "count": 1}, timeout=60)
            roll = client.call("music.generate", {"model": "music-default", "bars": 1, "seed": 1}, timeout=60)["roll"]
            assert roll.shape[0] == 16, roll.shape  # one bar of 16ths
        assert len(textures) >= 5
    finally:
        assert stop(running) == 0
