"""The model store: atomic saves, damaged files named, no pickles."""
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.store.checkpoints import ModelCorrupt, ModelNotFound, ModelStore

SUPPORT = Path(__file__).resolve().parent.parent / "support"


def test_save_list_load_delete(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    saved = store.save("rock-v1", {"enc.w": torch.arange(6.0).reshape(2, 3)}, {"kind": "shape", "config": {"a": 1}})
    assert len(saved["content_hash"]) == 64 and saved["created"]
    assert [m["name"] for m in store.list()] == ["rock-v1"]
    metadata, tensors = store.load("rock-v1")
    assert metadata["config"] == {"a": 1} and tensors["enc.w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    store.delete("rock-v1")
    with pytest.raises(ModelNotFound, match="rock-v1"):
        store.load("rock-v1")


@pytest.mark.parametrize("name", ["../escape", "", ".hidden", "a/b", "x" * 65, "name.run"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="bad model name"):
        ModelStore(tmp_path, builtin=None).save(name, {"w": torch.zeros(1)}, {"kind": "toy"})


def test_damaged_files_are_reported_not_fatal(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    store.save("good", {"w": torch.ones(3)}, {"kind": "toy"})
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01not a model at all")
    store.save("flipped", {"w": torch.ones(1000)}, {"kind": "toy"})
    data = bytearray((tmp_path / "flipped.safetensors").read_bytes())
    data[-5] ^= 0xFF  # a bit flip inside the tensor data: only the content hash can see it
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    listed = {m["name"]: m for m in store.list()}
    assert "error" in listed["garbage"] and "error" not in listed["good"]
    with pytest.raises(ModelCorrupt, match="not a readable model"):
        store.load("garbage")
    with pytest.raises(ModelCorrupt, match="content hash"):
        store.load("flipped")
    assert store.load("good")[1]["w"].sum() == 3


def test_pickles_are_never_loaded(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "pickled.safetensors")
    with pytest.raises(ModelCorrupt):
        ModelStore(tmp_path, builtin=None).load("pickled")


def test_builtin_models_are_read_only_and_user_models_shadow_them(tmp_path):
    builtin = tmp_path / "builtin"
    ModelStore(builtin, builtin=None).save("texture-default", {"w": torch.ones(1)}, {"kind": "texture"})
    store = ModelStore(tmp_path / "user", builtin=builtin)
    assert store.list()[0]["builtin"] is True
    with pytest.raises(PermissionError, match="ships with Atelier"):
        store.delete("texture-default")
    store.save("texture-default", {"w": torch.zeros(1)}, {"kind": "texture"})
    assert store.load("texture-default")[1]["w"].item() == 0 and not store.is_builtin("texture-default")


def test_sigkill_mid_save_leaves_the_previous_model_loadable(tmp_path):
    rng = random.Random(0)
    killed_mid_write = 0
    for trial in range(4):
        folder = tmp_path / f"trial{trial}"
        process = subprocess.Popen([sys.executable, str(SUPPORT / "save_forever.py"), str(folder)],
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "first save done"
        time.sleep(rng.uniform(0.05, 0.6))
        deadline = time.monotonic() + 5  # then kill as soon as a write is under way (a loaded machine is slow)
        while not any(folder.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        process.kill()
        process.wait()
        killed_mid_write += any(folder.glob(".*.tmp"))
        store = ModelStore(folder, builtin=None)  # opening the store clears what the killed writer left
        assert not list(folder.glob(".*.tmp"))
        metadata, tensors = store.load("victim")
        assert tensors["w"].eq(float(metadata["version"])).all() or metadata["version"] == 0
    assert killed_mid_write > 0, "no kill landed inside a write; the test proved nothing"


def test_non_finite_metrics_are_stored_as_null(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    saved = store.save("m", {"w": torch.ones(1)}, {"kind": "toy", "metrics": {"loss": float("nan"), "x": [float("inf")]}})
    assert saved["metrics"] == {"loss": None, "x": [None]}
    assert store.list()[0]["metrics"] == {"loss": None, "x": [None]}


def test_metadata_size_and_depth_are_bounded_at_save(tmp_path):
    store = ModelStore(tmp_path, builtin=None)
    deep: dict = {}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(ValueError, match="nests deeper"):
        store.save("deep", {"w": torch.ones(1)}, {"kind": "toy", "metrics": deep})
    with pytest.raises(ValueError, match="over the limit"):
        store.save("big", {"w": torch.ones(1)}, {"kind": "toy", "notes": "x" * (1 << 20)})
    assert store.names() == []


def test_stale_temps_go_but_a_living_writers_temp_stays(tmp_path):
    import fcntl

    from engine.store.atomic import remove_stale_temps

    run_dir = tmp_path / "m.run"
    run_dir.mkdir()
    stale, live = run_dir / ".resume.safetensors.abc.tmp", tmp_path / ".m.safetensors.def.tmp"
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    with open(live, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)  # as write_atomic holds it until the rename
        ModelStore(tmp_path, builtin=None)
        assert not stale.exists() and live.exists()
    assert remove_stale_temps(tmp_path) == [live] and not live.exists()
