"""One client cannot starve the others: backpressure on unread replies, a connection cap, shared watch streams."""
import select
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import RunningEngine, launch, serve_with, stop
from support.wire import RawConnection

from engine import protocol
from engine.client import EngineError


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def start_flood(engine: RunningEngine, count: int = 20_000) -> RawConnection:
    """A client that pipelines `count` engine.info requests (~18 kB replies) and never reads a reply."""
    flooder = RawConnection(engine.host, engine.port)
    flooder.hello(engine.token)
    flooder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frames = b"".join(protocol.encode_frame({"type": "request", "id": i, "op": "engine.info"}) for i in range(count))

    def send() -> None:
        try:
            flooder.sock.sendall(frames)
        except OSError:  # closed by the test while the engine held back
            pass

    threading.Thread(target=send, daemon=True).start()
    return flooder


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the engine's RSS from /proc")
def test_a_flooding_client_that_reads_nothing_neither_delays_others_nor_keeps_memory(tmp_path):
    engine = launch(tmp_path)
    try:
        with engine.client("pinger") as client:
            client.call("engine.info")
            before = rss_mb(engine.process.pid)
            flooder = start_flood(engine)
            time.sleep(0.5)
            deadline = time.monotonic() + 5
            latencies = []
            while time.monotonic() < deadline:
                latencies.append(client.ping())
                time.sleep(0.005)
            during = rss_mb(engine.process.pid)
            flooder.close()
            assert p99(latencies) < 0.050, f"ping p99 {p99(latencies) * 1e3:.1f} ms while another client floods"
            assert during - before < 100, f"the flood grew the engine by {during - before:.0f} MB"
            time.sleep(1.0)
            after = rss_mb(engine.process.pid)
            assert after - before < 50, f"{after - before:.0f} MB stayed behind after the flooder left"
            assert client.ping() < 0.05
    finally:
        assert stop(engine) == 0


def test_over_the_connection_cap_a_client_is_refused_with_a_code(tmp_path):
    engine = serve_with(tmp_path, "--max-connections", "3")
    try:
        held = [engine.client(f"held-{i}") for i in range(3)]
        refused = RawConnection(engine.host, engine.port)
        reply = refused.read()
        assert reply["code"] == protocol.TOO_MANY_CONNECTIONS and "3" in reply["message"]
        assert refused.is_closed_by_peer()
        with pytest.raises(EngineError) as caught:
            engine.client("one-too-many")
        assert caught.value.code == protocol.TOO_MANY_CONNECTIONS
        held.pop().close()
        time.sleep(0.2)
        with engine.client("after-one-left") as client:
            assert client.ping() < 1.0
        for client in held:
            client.close()
    finally:
        assert stop(engine) == 0


def test_running_out_of_file_descriptors_is_refused_politely_and_logged_briefly(tmp_path):
    engine = serve_with(tmp_path, fd_limit=256)
    sockets, refused = [], 0
    try:
        for _ in range(400):
            raw = RawConnection(engine.host, engine.port)
            sockets.append(raw)
        time.sleep(1.0)
        poller = select.poll()
        for raw in sockets:
            poller.register(raw.sock, select.POLLIN)
        answered = {fd for fd, _ in poller.poll(1000)}
        for raw in sockets:
            if raw.sock.fileno() in answered:  # the others are held open, waiting for a hello
                refused += raw.read()["code"] == protocol.TOO_MANY_CONNECTIONS
        assert refused >= 400 - 256, f"only {refused} connections were refused with the code"
        for raw in sockets:
            raw.close()
        sockets.clear()
        with engine.client() as client:
            assert client.ping() < 1.0
    finally:
        for raw in sockets:
            raw.close()
        assert stop(engine) == 0
    assert len(engine.log()) < 20_000, engine.log()[-2000:]
    assert "connections open" in engine.log()


def test_a_thousand_watchers_do_not_slow_the_job(tmp_path):
    engine = launch(tmp_path, {"OMP_NUM_THREADS": "1"})
    params = {"seconds": 3, "size": 64}
    try:
        with engine.client("owner") as owner, engine.client("watchers") as watchers:
            alone = owner.call("device.benchmark", params, timeout=60)["gflops"]
            job = owner.submit("device.benchmark", params)
            while job.job_id is None:
                time.sleep(0.01)
            watches = [watchers.submit("jobs.watch", {"job": job.job_id}) for _ in range(1000)]
            watched = job.result(timeout=60)["gflops"]
            assert all(w.result(timeout=30)["gflops"] == watched for w in watches)
            assert watched > alone / 2, f"{alone:.3f} GFLOP/s alone, {watched:.3f} with 1,000 watchers"
    finally:
        assert stop(engine) == 0
