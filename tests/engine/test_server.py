"""The engine over real sockets: handshake, auth, bad input, jobs, cancel, many clients."""
import json
import stat
import struct
import threading
import time

import numpy as np
import pytest
from support.wire import RawConnection

from engine import protocol
from engine.client import EngineError


def test_the_engine_listens_on_loopback_with_a_private_token(engine):
    assert engine.host == "127.0.0.1"
    token_file = engine.state_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(engine.token) >= 32


def test_handshake_reports_version_device_and_capabilities(engine):
    with engine.client("handshake") as client:
        info = client.info
        assert info["type"] == "hello" and info["protocol"] == protocol.PROTOCOL_VERSION
        assert info["engine"] and info["device"] == "cpu"
        ops = info["capabilities"]["ops"]
        assert {"ping", "train", "models.list", "jobs.watch", "device.benchmark"} <= set(ops)
        assert ops["device.benchmark"]["params"]["seconds"]["type"] == "float"
        assert isinstance(info["capabilities"]["kinds"], list) and info["capabilities"]["models"] == []


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_wrong_or_missing_token_is_refused_and_the_connection_closed(engine, token):
    raw = RawConnection(engine.host, engine.port)
    reply = raw.hello(token)
    assert reply["type"] == "error" and reply["code"] == protocol.AUTH_FAILED
    assert "token" in reply["message"]
    assert raw.is_closed_by_peer()


def test_a_request_before_hello_is_refused(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.send_header({"type": "request", "id": 1, "op": "ping"})
    assert raw.read()["code"] == protocol.AUTH_FAILED
    assert raw.is_closed_by_peer()


def test_other_protocol_version_is_told_to_update(engine):
    raw = RawConnection(engine.host, engine.port)
    reply = raw.hello(engine.token, version=99)
    assert reply["code"] == protocol.PROTOCOL_MISMATCH and "update" in reply["message"]


def test_oversize_frame_is_refused_before_reading_it(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.hello(engine.token)
    raw.send(struct.pack(">II", protocol.MAX_FRAME_BYTES + 1, 16))
    reply = raw.read()
    assert reply["code"] == protocol.FRAME_TOO_LARGE and "limit" in reply["message"]
    assert raw.is_closed_by_peer()


def test_oversize_frame_before_authentication_is_refused(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.send(struct.pack(">II", protocol.MAX_UNAUTHENTICATED_FRAME_BYTES + 1, 16))
    assert raw.read()["code"] == protocol.FRAME_TOO_LARGE


def test_garbage_bytes_get_an_error_and_a_close(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.hello(engine.token)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = raw.read()
    assert reply["type"] == "error" and reply["code"] in (protocol.BAD_FRAME, protocol.FRAME_TOO_LARGE)
    assert raw.is_closed_by_peer()


def test_truncated_frame_then_hangup_leaves_the_engine_serving(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.hello(engine.token)
    frame = protocol.encode_frame({"type": "request", "id": 1, "op": "ping"})
    raw.send(frame[: len(frame) // 2])
    raw.close()
    with engine.client() as client:
        assert client.ping() < 1.0


def test_malformed_header_is_answered_and_the_connection_stays_usable(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.hello(engine.token)
    head = b'{"type": "request", "id": 1, '
    raw.send(struct.pack(">II", 4 + len(head), len(head)) + head)
    assert raw.read()["code"] == protocol.BAD_MESSAGE
    raw.send_header({"type": "request", "id": 2, "op": "ping"})
    _, final = raw.read_until_final(2)
    assert final["type"] == "result"


def test_a_request_whose_arrays_do_not_parse_gets_its_answer_by_id(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.hello(engine.token)
    head = json.dumps({"type": "request", "id": 7, "op": "ping",
                       "arrays": [{"dtype": "float32", "shape": [4]}]}).encode()
    raw.send(struct.pack(">II", 4 + len(head) + 8, len(head)) + head + b"\0" * 8)  # 8 of the 16 bytes it declares
    reply = raw.read()
    assert reply["id"] == 7 and reply["code"] == protocol.BAD_MESSAGE and "declares 16 bytes" in reply["message"]
    raw.send_header({"type": "request", "id": 8, "op": "ping"})
    _, final = raw.read_until_final(8)
    assert final["type"] == "result"


def test_a_message_with_more_arrays_than_a_frame_carries_is_refused_before_sending():
    with pytest.raises(ValueError, match=f"at most {protocol.MAX_ARRAYS} arrays"):
        protocol.encode_frame({"type": "request"}, [np.zeros(1, np.float32)] * (protocol.MAX_ARRAYS + 1))


def test_unknown_op_suggests_the_right_one(engine):
    with engine.client() as client:
        with pytest.raises(EngineError) as caught:
            client.call("models.lst")
        assert caught.value.code == protocol.UNKNOWN_OP and "models.list" in caught.value.message


@pytest.mark.parametrize("params, words", [
    ({"seconds": "long"}, ["seconds", "float", "str"]),
    ({"seconds": True}, ["seconds", "float", "bool"]),
    ({"seconds": -1}, ["seconds", "between"]),
    ({"size": 1.5}, ["size", "int"]),
    ({"sekonds": 1}, ["unknown parameter", "sekonds"]),
])
def test_wrong_parameter_types_and_ranges_get_clear_errors(engine, params, words):
    with engine.client() as client:
        with pytest.raises(EngineError) as caught:
            client.call("device.benchmark", params)
        assert caught.value.code == protocol.BAD_PARAMS
        for word in words:
            assert word in caught.value.message


def test_params_must_be_an_object(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.hello(engine.token)
    raw.send_header({"type": "request", "id": "a", "op": "device.benchmark", "params": [1, 2]})
    _, final = raw.read_until_final("a")
    assert final["code"] == protocol.BAD_PARAMS


def test_progress_then_exactly_one_result(engine):
    raw = RawConnection(engine.host, engine.port)
    raw.hello(engine.token)
    raw.send_header({"type": "request", "id": 7, "op": "device.benchmark", "params": {"seconds": 0.5, "size": 64}})
    progress, final = raw.read_until_final(7)
    assert final["type"] == "result" and final["value"]["gflops"] > 0
    assert progress and all(0.0 <= p["fraction"] <= 1.0 for p in progress)
    raw.send_header({"type": "request", "id": 8, "op": "ping"})
    frame = raw.read()
    assert frame["id"] == 8, "a request got a second final reply"


def test_cancel_mid_job(engine):
    with engine.client() as client:
        started = threading.Event()
        job = client.submit("device.benchmark", {"seconds": 60, "size": 128},
                            on_progress=lambda f, m, p: f > 0 and started.set())
        assert started.wait(20)
        t0 = time.monotonic()
        job.cancel()
        with pytest.raises(EngineError) as caught:
            job.result(timeout=10)
        assert caught.value.code == protocol.CANCELLED
        assert time.monotonic() - t0 < 5
        states = {j["job"]: j["state"] for j in client.call("jobs.list")["jobs"]}
        assert states[job.job_id] == "cancelled"


def test_client_disconnect_cancels_its_jobs(engine):
    leaving = engine.client("leaving")
    started = threading.Event()
    job = leaving.submit("device.benchmark", {"seconds": 60, "size": 128},
                         on_progress=lambda f, m, p: f > 0 and started.set())
    assert started.wait(20)
    leaving.close()
    with engine.client("watcher") as watcher:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = {j["job"]: j["state"] for j in watcher.call("jobs.list")["jobs"]}
            if states.get(job.job_id) == "cancelled":
                break
            time.sleep(0.1)
        assert states.get(job.job_id) == "cancelled"


def test_sixteen_concurrent_clients(engine):
    errors, results = [], []

    def worker(i: int) -> None:
        try:
            with engine.client(f"client-{i}") as client:
                for _ in range(20):
                    client.ping()
                value = client.call("device.benchmark", {"seconds": 0.05, "size": 32}, timeout=60)
                results.append(value["gflops"] > 0)
        except Exception as e:  # collected, then asserted in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and results == [True] * 16


def test_a_stalled_client_does_not_stall_the_others(engine):
    stalled = RawConnection(engine.host, engine.port)
    stalled.hello(engine.token)
    stalled.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
    # Ask for a large reply many times and never read it.
    for i in range(300):
        stalled.send_header({"type": "request", "id": i, "op": "engine.info"})
    with engine.client() as client:
        latencies = [client.ping() for _ in range(20)]
    assert max(latencies) < 1.0
    stalled.close()


def test_arrays_pass_through_a_request(engine):
    with engine.client() as client:
        with pytest.raises(EngineError) as caught:
            client.call("device.benchmark", {"seconds": np.zeros(3, np.float32)})
        assert caught.value.code == protocol.BAD_PARAMS and "array(3,)" in caught.value.message


def test_a_corrupt_model_file_gets_a_clear_error_and_the_engine_stays_up(engine):
    engine.models_dir.mkdir(parents=True, exist_ok=True)
    (engine.models_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    try:
        with engine.client() as client:
            listed = {m["name"]: m for m in client.call("models.list")["models"]}
            assert "not a readable model" in listed["broken"]["error"]
            with pytest.raises(EngineError) as caught:
                client.call("models.load", {"name": "broken"})
            assert caught.value.code == protocol.MODEL_CORRUPT and "delete it" in caught.value.message
            with pytest.raises(EngineError) as caught:
                client.call("models.load", {"name": "absent"})
            assert caught.value.code == protocol.NOT_FOUND
            assert client.ping() < 1.0
    finally:
        (engine.models_dir / "broken.safetensors").unlink()
