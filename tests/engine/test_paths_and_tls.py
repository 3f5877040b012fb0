"""Paths on a leash over the socket, the in-process CLI trusted; --host needs TLS; TLS clients."""
import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_with, stop
from PIL import Image

from engine import protocol
from engine.client import Client, EngineError


def noise_png(path: Path, side: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def leashed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leash")
    allowed = tmp / "allowed"
    noise_png(allowed / "tiny.png")
    running = serve_with(tmp, "--allow-path", str(allowed))
    yield running, allowed, tmp
    assert stop(running) == 0


def _refused(client: Client, op: str, params: dict) -> EngineError:
    with pytest.raises(EngineError) as caught:
        client.call(op, params, timeout=120)
    return caught.value


def test_texture_eval_on_a_system_folder_is_refused_without_a_listing(leashed):
    engine, _, _ = leashed
    with engine.client() as client:
        error = _refused(client, "texture.eval", {"model": "texture-default", "images": "/etc"})
    assert error.code == protocol.PATH_NOT_ALLOWED, error
    assert "--allow-path" in error.message and len(error.message) < 600
    assert not any(name in error.message for name in ("passwd", "hosts", "os-release"))


def test_files_outside_the_allowed_folders_are_refused_however_they_are_named(leashed):
    engine, allowed, tmp = leashed
    outside = noise_png(tmp / "outside" / "photo.png")
    (allowed / "escape").symlink_to(outside.parent, target_is_directory=True)
    sneaky = [str(outside), str(allowed / ".." / "outside" / "photo.png"), str(allowed / "escape" / "photo.png"),
              "~/../../etc/passwd", "/nonexistent/and/unknown"]
    with engine.client() as client:
        for path in sneaky:
            error = _refused(client, "texture.eval", {"model": "texture-default", "images": path})
            assert error.code == protocol.PATH_NOT_ALLOWED, (path, error)
            assert "no such" not in error.message.lower()  # nor does it say whether the file is there
        for kind, data in (("texture", {"images": str(outside)}), ("shape", {"meshes": str(outside.parent)}),
                           ("music", {"midi": str(outside.parent)}), ("music", {"jsb": "/etc"})):
            error = _refused(client, "train", {"kind": kind, "name": "x", "data": data})
            assert error.code == protocol.PATH_NOT_ALLOWED, (kind, error)
        for op, params in (("shape.eval", {"model": "shape-default", "meshes": "/etc"}),
                           ("music.eval", {"model": "music-default", "midi": "/etc"})):
            assert _refused(client, op, params).code == protocol.PATH_NOT_ALLOWED, op


def test_files_inside_an_allowed_folder_and_demo_names_pass(leashed):
    engine, allowed, _ = leashed
    broken_model = {"no_such_setting": 1}  # fails after the path check, before any training
    with engine.client() as client:
        for images in (str(allowed / "tiny.png"), str(allowed), "gravel"):
            error = _refused(client, "train", {"kind": "texture", "name": "x", "data": {"images": images},
                                               "model": broken_model})
            assert error.code == protocol.BAD_PARAMS and "no_such_setting" in error.message, (images, error)


def test_a_file_refused_over_the_socket_is_read_by_the_in_process_cli(leashed, tmp_path):
    engine, _, _ = leashed
    outside = noise_png(tmp_path / "anywhere" / "tiny.png", side=8)
    params = {"kind": "texture", "name": "t", "data": {"images": str(outside)}, "train": {"steps": 1}}
    with engine.client() as client:
        assert _refused(client, "train", params).code == protocol.PATH_NOT_ALLOWED
    env = {**os.environ, "ATELIER_MODELS_DIR": str(tmp_path / "models")}
    result = subprocess.run([sys.executable, "-m", "engine", "train", "texture", "--images", str(outside), "--name",
                             "t", "--steps", "1", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    error = json.loads(result.stdout)  # it read the file, and found it too small to train on
    assert error["error"] == protocol.BAD_PARAMS and "too small" in error["message"], error


def test_a_network_host_without_tls_refuses_to_start_unless_insecure(tmp_path):
    env = {**os.environ, "ATELIER_STATE_DIR": str(tmp_path / "state"), "ATELIER_MODELS_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "engine", "serve", "--host", "0.0.0.0", "--port", "0", "--json", "--device", "cpu"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2
    assert "WARNING" in refused.stderr and "--tls-cert" in refused.stderr and "--insecure" in refused.stderr
    assert not (tmp_path / "state" / "engine.json").exists()
    engine = serve_with(tmp_path, "--host", "0.0.0.0", "--insecure")
    try:
        assert engine.host == "0.0.0.0"
        assert "WARNING" in engine.log() and "exposes the engine" in engine.log()
        with Client("127.0.0.1", engine.port, token=engine.token) as client:
            assert client.ping() < 1.0
    finally:
        assert stop(engine) == 0


def make_certificate(folder: Path, name: str = "engine") -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (the `cryptography` package is not installed here)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_a_tls_engine_answers_tls_clients_only(tmp_path, monkeypatch):
    cert, key = make_certificate(tmp_path)
    engine = serve_with(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        recorded = json.loads((engine.state_dir / "engine.json").read_text())
        assert recorded["tls"] is True and Path(recorded["tls_cert"]) == cert.resolve()
        with Client(engine.host, engine.port, token=engine.token, tls=True, tls_cert=cert) as client:
            assert client.ping() < 1.0
            info = client.call("engine.info")  # ~18 kB through TLS
            assert "texture.generate" in info["capabilities"]["ops"]
            value = client.call("device.benchmark", {"seconds": 0.2, "size": 32}, timeout=60)
            assert value["gflops"] > 0
        # The address form, and the engine recorded in engine.json, say TLS by themselves.
        monkeypatch.setenv("ATELIER_TLS_CERT", str(cert))
        with Client(f"tls://{engine.host}", engine.port, token=engine.token) as client:
            assert client.ping() < 1.0
        monkeypatch.delenv("ATELIER_TLS_CERT")
        monkeypatch.setenv("ATELIER_STATE_DIR", str(engine.state_dir))
        with Client(engine.host, engine.port, token=engine.token) as client:
            assert client.ping() < 1.0
        cli = subprocess.run([sys.executable, "-m", "engine", "models", "--engine", "--json"], capture_output=True,
                             text=True, env={**os.environ, "ATELIER_STATE_DIR": str(engine.state_dir)}, timeout=120)
        assert cli.returncode == 0 and "models" in json.loads(cli.stdout), cli.stderr
        # A plain client, or one pinning another certificate, gets nowhere.
        with pytest.raises((OSError, EngineError)):
            Client(engine.host, engine.port, token=engine.token, tls=False, timeout=5).call("ping", timeout=5)
        other, _ = make_certificate(tmp_path, "other")
        with pytest.raises(ssl.SSLCertVerificationError):
            Client(engine.host, engine.port, token=engine.token, tls=True, tls_cert=other)
        with Client(engine.host, engine.port, token=engine.token, tls=True, tls_cert=cert) as client:
            assert client.ping() < 1.0, "the engine stopped serving after bad handshakes"
    finally:
        assert stop(engine) == 0
