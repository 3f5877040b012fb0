"""Engine hardening (issue 24): authentication that cannot turn off, and errors with stable codes."""
from __future__ import annotations

import stat

import pytest
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


TINY_SHAPE_TRAINING = {"kind": "shape", "data": {"procedural": 8}, "model": {"resolution": 8, "width": 2, "latent_dim": 4},
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
