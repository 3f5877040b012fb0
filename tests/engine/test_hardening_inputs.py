"""Engine hardening (issue 24): authentication that cannot turn off, and errors with stable codes."""
from __future__ import annotations

import stat

import pytest
from conftest import launch, stop
from support.wire import RawConnection

from engine import paths, protocol


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
