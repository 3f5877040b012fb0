"""Engine benchmark: start-up time, ping latency idle and under load, requests per second, fair service.

    .venv/bin/python bench/engine_bench.py [--pings 2000] [--seconds 5]

Peers measured in the same run, so the ratios mean something on a noisy shared machine:
- start-up against a bare `python -c "import torch"` (the floor any torch engine pays);
- latency and throughput against a minimal asyncio echo server speaking the same frames
  (no auth, no routing): what Python and loopback cost by themselves;
- ping while another client's job runs: a 1024² matmul (torch, the GIL let go), and 256 bars of
  the shipped music model and of a tiny one (a token at a time: Python and short torch calls);
- ping while one client floods (pipelines engine.info and reads nothing) and while 1,000 idle
  connections are open, against the idle ping of the same engine;
- the engine's RSS after 100,000 requests against its RSS before them (Linux only).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import protocol  # noqa: E402
from engine.cli.demo import start_engine  # noqa: E402
from engine.client import Client  # noqa: E402
from engine.music.output import roll_to_midi  # noqa: E402
from engine.music.piece import LOWEST, N_KEYS, ONSET  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class EchoPeer:
    """Answers every frame with a result frame: the floor under our protocol's latency."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self.ready.wait()

    async def _serve(self) -> None:
        async def handle(reader, writer):
            try:
                while True:
                    prefix = await reader.readexactly(8)
                    header_length, rest = protocol.split_prefix(prefix)
                    header = protocol.decode_body(await reader.readexactly(header_length),
                                                  await reader.readexactly(rest))
                    writer.write(protocol.encode_frame({"type": "result", "id": header.get("id"), "value": {}}))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await server.serve_forever()

    def ping(self, sock_file, sock) -> float:
        start = time.perf_counter()
        sock.sendall(protocol.encode_frame({"type": "request", "id": 1, "op": "ping"}))
        protocol.read_frame(sock_file)
        return time.perf_counter() - start

    def connect(self):
        import socket

        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, sock.makefile("rb")


def raw_client(host: str, port: int, token: str) -> tuple[socket.socket, object]:
    """An authenticated connection without the client's reader thread: 1,000 of them stay cheap."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(protocol.encode_frame({"type": "hello", "protocol": protocol.PROTOCOL_VERSION, "client": "bench",
                                        "token": token}))
    reader = sock.makefile("rb")
    if protocol.read_frame(reader)["type"] != "hello":
        raise RuntimeError("the engine refused the bench's connection")
    return sock, reader


def start_flood(host: str, port: int, token: str, count: int = 20_000) -> socket.socket:
    """One client pipelines `count` engine.info requests (~18 kB replies each) and reads none of the replies."""
    sock, _ = raw_client(host, port, token)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frames = b"".join(protocol.encode_frame({"type": "request", "id": i, "op": "engine.info"}) for i in range(count))

    def send() -> None:
        try:
            sock.sendall(frames)
        except OSError:  # closed once the pings are measured, while the engine holds the rest back
            pass

    threading.Thread(target=send, daemon=True).start()
    return sock


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def many_requests(host: str, port: int, token: str, total: int, clients: int = 4, window: int = 64) -> None:
    """`total` requests over `clients` connections, `window` in flight each: pings, engine.info, models.list."""
    def worker(count: int) -> None:
        sock, reader = raw_client(host, port, token)
        sent = 0
        while sent < count:
            batch = min(window, count - sent)
            ops = ["engine.info" if (sent + i) % 10 == 0 else "models.list" if (sent + i) % 100 == 1 else "ping"
                   for i in range(batch)]
            sock.sendall(b"".join(protocol.encode_frame({"type": "request", "id": sent + i, "op": op})
                                  for i, op in enumerate(ops)))
            for _ in range(batch):
                protocol.read_frame(reader)
            sent += batch
        sock.close()

    threads = [threading.Thread(target=worker, args=(total // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def pings_during(connect, client: Client, op: str, params: dict, pings: int) -> list[float]:
    """Ping times while another client's `op` job runs (those after it ended are not kept)."""
    with connect() as loader:
        job = loader.submit(op, params)
        time.sleep(0.5)
        times = []
        while len(times) < pings and not job.done:
            times.append(client.ping())
        job.cancel()
    if not times:
        raise RuntimeError(f"{op} ended before the first ping; give it more to do")
    return times


def small_music_model(client: Client, models: Path) -> str:
    """A tiny music model (32 hidden units) trained by the engine for 6 steps on four chord files:
    a user's small model, whose torch calls are short enough to starve the loop of the GIL."""
    folder = models / "data" / "chords"
    folder.mkdir(parents=True, exist_ok=True)
    for shift in range(4):  # 16 quarter-note chords on I-IV-V, a semitone higher in each file
        roll = np.zeros((16, N_KEYS), np.int8)
        for beat in range(16):
            chord = ((48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 71))[beat % 3]
            roll[beat, [p + shift - LOWEST for p in chord]] = ONSET
        roll_to_midi(roll, steps_per_quarter=1).save(folder / f"piece{shift}.mid")
    net = {"holds": True, "d_hidden": 32, "d_embed": 16, "n_layers": 1, "d_decoder": 32}
    client.call("train", {"kind": "music", "name": "music-small", "data": {"midi": str(folder)},
                          "model": {"model": net, "seq_steps": 32, "valid_fraction": 0.25},
                          "train": {"steps": 6, "batch_size": 4}}, timeout=300)
    return "music-small"


def startup_seconds(runs: int) -> tuple[float, float]:
    ours, floor = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as state:
            start = time.perf_counter()
            process, _ = start_engine("cpu", Path(state), {"ATELIER_MODELS_DIR": str(Path(state) / "models")})
            ours.append(time.perf_counter() - start)
            process.terminate()
            process.wait()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        floor.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(floor)


def requests_per_second(make_ping, clients: int, seconds: float) -> float:
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        ping = make_ping()
        while time.perf_counter() < stop:
            ping()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput runs")
    parser.add_argument("--startups", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")

    ours_start, torch_floor = startup_seconds(args.startups)
    print(f"serve → ready: {ours_start:.2f} s (goal ≤ 3 s); bare `import torch` {torch_floor:.2f} s; "
          f"ratio {ours_start / torch_floor:.2f}")

    echo = EchoPeer()
    sock, sock_file = echo.connect()
    echo_p50, echo_p99 = percentiles([echo.ping(sock_file, sock) for _ in range(args.pings)])

    with tempfile.TemporaryDirectory() as state:
        process, ready = start_engine("cpu", Path(state), {"ATELIER_MODELS_DIR": str(Path(state) / "models")})
        token = Path(ready["token_file"]).read_text().strip()

        def connect() -> Client:
            return Client(ready["host"], ready["port"], token=token, name="bench")

        try:
            with connect() as client:
                idle = [client.ping() for _ in range(args.pings)]
                loaded = pings_during(connect, client, "device.benchmark", {"seconds": 600, "size": 1024}, args.pings)
                music = {model: pings_during(connect, client, "music.generate", {"model": model, "bars": 256},
                                             args.pings // 10)
                         for model in ("music-default", small_music_model(client, Path(state) / "models"))}
            idle_p50, idle_p99 = percentiles(idle)
            load_p50, load_p99 = percentiles(loaded)
            print(f"ping idle:       p50 {idle_p50 * 1e3:.3f} ms  p99 {idle_p99 * 1e3:.3f} ms (goal p99 ≤ 2 ms)")
            print(f"ping under load: p50 {load_p50 * 1e3:.3f} ms  p99 {load_p99 * 1e3:.3f} ms (goal p99 ≤ 5 ms; "
                  "a 1024² matmul job running)")
            for model, times in music.items():
                p50, p99 = percentiles(times)
                print(f"ping beside music: p50 {p50 * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms, {len(times)} pings "
                      f"while {model} made 256 bars; p99 / idle p99 {p99 / idle_p99:.1f}")
            print(f"echo peer:       p50 {echo_p50 * 1e3:.3f} ms  p99 {echo_p99 * 1e3:.3f} ms; "
                  f"ours/echo p50 {idle_p50 / echo_p50:.2f}, p99 {idle_p99 / echo_p99:.2f}")

            def engine_pinger():
                client = connect()
                return client.ping

            def echo_pinger():
                sock, sock_file = echo.connect()
                return lambda: echo.ping(sock_file, sock)

            ours_rps = requests_per_second(engine_pinger, 16, args.seconds)
            echo_rps = requests_per_second(echo_pinger, 16, args.seconds)
            print(f"16 clients: {ours_rps:.0f} requests/s; echo peer {echo_rps:.0f}/s; ratio {ours_rps / echo_rps:.2f}")
            fair_service(ready, token, process.pid, idle_p99, args.pings)
        finally:
            process.terminate()
            process.wait()


def fair_service(ready: dict, token: str, pid: int, idle_p99: float, pings: int) -> None:
    host, port = ready["host"], ready["port"]
    start = rss_mb(pid)
    with Client(host, port, token=token, name="bench") as client:
        flood = start_flood(host, port, token)
        time.sleep(0.5)
        _, flooded_p99 = percentiles([client.ping() for _ in range(pings)])
        flood.close()
        print(f"ping p99, one client flooding: {flooded_p99 * 1e3:.3f} ms (goal ≤ 5 ms); "
              f"idle {idle_p99 * 1e3:.3f} ms; ratio {flooded_p99 / idle_p99:.2f}")
        idle = [raw_client(host, port, token)[0] for _ in range(1000)]
        _, crowded_p99 = percentiles([client.ping() for _ in range(pings)])
        for sock in idle:
            sock.close()
        print(f"ping p99, 1,000 idle connections open: {crowded_p99 * 1e3:.3f} ms (goal ≤ 5 ms); idle "
              f"{idle_p99 * 1e3:.3f} ms; ratio {crowded_p99 / idle_p99:.2f}")
    time.sleep(1.0)
    before = rss_mb(pid)
    started = time.perf_counter()
    many_requests(host, port, token, 100_000)
    seconds = time.perf_counter() - started
    time.sleep(1.0)
    after = rss_mb(pid)
    if start is None or before is None or after is None:
        print("engine RSS: not measured (needs Linux /proc)")
    else:
        print(f"engine RSS after 100,000 requests ({seconds:.1f} s): {after:.0f} MB; before them {before:.0f} MB "
              f"(growth {after - before:+.1f} MB, goal ≤ 50 MB); before the flood {start:.0f} MB "
              f"(growth {after - start:+.1f} MB)")


if __name__ == "__main__":
    main()
