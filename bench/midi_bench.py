"""MIDI bridge benchmark: how close to their intended times do the notes arrive?

    .venv/bin/python bench/midi_bench.py [--seconds 10] [--bpm 150]

Runs a headless JACK server (dummy backend), a real engine, the real bridge process and a
JACK MIDI receiver of our own that records the frame each message arrives at, and reports,
for the native JACK output and the rtmidi one in the same run:

- delivery error: the arrival frame minus the frame of the intended time, in ms (p50, p99,
  max), with the JACK period (goal for the native output: p99 <= 0.1 ms; rtmidi: one period);
- delivery ratio: logged sends that arrived, and the xruns meanwhile (jackd's log; cycles the
  receiver saw skipped or repeated);
- host-side send error: when the bridge's send (native: hand-over) returned minus when it
  should have (goal p99 <= 0.5 ms);
- the same while the engine generates 1024x1024 textures back to back, and while a CPU hog (one
  busy process per core, at normal priority) runs (goal: delivery p99 unchanged within 0.1 ms
  while JACK has no xruns).

Baseline, measured in the same run: a bare sender in this process that schedules with the
same sleep-then-spin through the same JACK path -- the floor that JACK and Python set,
with no engine and no bridge.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "midi_bridge"))
sys.path.insert(0, str(ROOT))

from midi_rig import (JACK_PERIOD, JACK_RATE, Bridge, FrameReceiver, JackServer, Receiver,  # noqa: E402
                      match_log, percentile, start_engine_in, tiny_model)


def stats(values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return f"p50 {percentile(ms, 50):7.3f}  p99 {percentile(ms, 99):7.3f}  max {max(ms):7.3f} ms"


def baseline(receiver: Receiver, seconds: float, rate_hz: float = 20.0) -> tuple[list[float], list[float], int, int]:
    """A bare scheduled sender through the same JACK path, at the bridge's thread priority:
    (delivery errors, send errors, sent, arrived)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(_baseline(receiver, seconds, rate_hz)))
    worker.start()
    worker.join()
    return out[0]


def _baseline(receiver: Receiver, seconds: float, rate_hz: float) -> tuple[list[float], list[float], int, int]:
    import rtmidi

    from midi_bridge.scheduler import raise_priority

    raise_priority()
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="bench-floor")
    out.open_port(out.get_ports().index(receiver.name))
    time.sleep(0.3)
    first = len(receiver.snapshot())
    due, sends = time.monotonic() + 0.2, []
    while len(sends) < min(seconds * rate_hz, 2048):
        while time.monotonic() < due - 0.003:
            time.sleep(0.001)
        while time.monotonic() < due:
            pass
        n = len(sends)
        out.send_message([0x90 | (n >> 7 & 0x0F), n & 0x7F, 100])  # numbered by channel and pitch
        sends.append((due, time.monotonic(), n))
        due += 1 / rate_hz
    time.sleep(0.3)
    arrived = {}
    for t, m in receiver.snapshot()[first:]:
        arrived.setdefault((m[0] & 0x0F) << 7 | m[1], t)  # a duplicate (xrun) keeps the first arrival
    out.close_port()
    out.delete()
    delivery = [arrived[n] - d for d, _, n in sends if n in arrived]
    return delivery, [s - d for d, s, _ in sends], len(sends), len(delivery)


def cpu_hog(stop: threading.Event, done: list) -> None:
    """One busy process per core until `stop`."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    stop.wait()
    for hog in hogs:
        hog.kill()
        hog.wait()


def bridge_run(engine, jack: JackServer, tmp: Path, seconds: float, bpm: float, api: str, load=None) -> dict:
    """The bridge (with the tiny model) playing through `api` to a frame-recording receiver for
    `seconds`, with `load` running meanwhile."""
    receiver = FrameReceiver(f"bench{int(time.monotonic() * 1000) % 100000}")
    args = ["--port", receiver.name, "--bpm", str(bpm)]
    bridge = Bridge(args, engine, tmp, jack.env, api=api)
    troubles = jack.troubles()
    bridge.wait_for("ready", timeout=60)
    stop = threading.Event()
    textures = []
    if load:
        worker = threading.Thread(target=load, args=(stop, textures), daemon=True)
        worker.start()
    time.sleep(seconds)
    stop.set()
    bridge.stop()
    time.sleep(0.3)
    received, sent = receiver.snapshot(), bridge.sent()
    found = match_log(received, sent)
    timed = [(r, t) for r, t in found.pairs if r.get("why") is None]
    delivery = [receiver.error_frames(t, r["due"]) / receiver.rate for r, t in timed]
    irregular = len(receiver.irregular)
    receiver.close()
    records = bridge.records()
    priority = next((r["priority"] for r in records if r.get("event") == "timing_thread"), "?")
    lead = next((r["lead"] for r in records if r.get("event") == "output"), 0.0)
    return {"priority": priority, "delivery": delivery,
            "send": [r["sent"] - (r["due"] - lead) for r in sent if r.get("why") is None],
            "sent": len(sent), "arrived": len(found.pairs), "incidents": found.incidents,
            "xruns": jack.troubles() - troubles, "irregular": irregular, "textures": textures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bpm", type=float, default=150.0)
    parser.add_argument("--texture-size", type=int, default=1024)
    args = parser.parse_args()
    period_ms = JACK_PERIOD / JACK_RATE * 1000
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}")
    # A musician's JACK runs with real-time priority; where this machine refuses it, the server runs without.
    with tempfile.TemporaryDirectory(prefix="midi-bench-") as tmp_name, JackServer(realtime=True) as jack:
        print(f"JACK dummy backend, {JACK_RATE} Hz, period {JACK_PERIOD} frames = {period_ms:.2f} ms, "
              f"{'real-time' if jack.realtime else 'no real-time (refused)'} server")
        tmp = Path(tmp_name)
        engine = start_engine_in(tmp / "engine", tiny_model(tmp / "model"))
        try:
            receiver = Receiver("floor")
            floor_delivery, floor_send, floor_sent, floor_arrived = baseline(receiver, args.seconds)
            receiver.close()
            def textures(stop: threading.Event, done: list) -> None:
                with engine.client("midi-bench-load") as client:
                    model = next(m["name"] for m in client.call("models.list")["models"] if m["kind"] == "texture")
                    while not stop.is_set():
                        start = time.monotonic()
                        client.call("texture.generate", {"model": model, "width": args.texture_size,
                                                         "seed": len(done)}, timeout=600)
                        done.append(time.monotonic() - start)

            runs = {}
            loads = {"engine idle": None, f"engine making {args.texture_size}² textures": textures,
                     "a CPU hog on every core": cpu_hog}
            for api in ("jack", "rtmidi-jack"):
                for label, load in loads.items():
                    runs[api, label] = bridge_run(engine, jack, tmp, args.seconds, args.bpm, api, load=load)
        finally:
            engine.stop()
    print(f"\nbaseline: bare sender, same JACK path, {floor_sent} events at 20 Hz")
    print(f"  delivery error   {stats(floor_delivery)}   delivered {floor_arrived}/{floor_sent}")
    print(f"  host send error  {stats(floor_send)}")
    names = {"jack": "native JACK output (each message at its frame)", "rtmidi-jack": "rtmidi JACK output"}
    for (api, label), run in runs.items():
        print(f"\n{names[api]}, {label}: "
              f"{run['sent']} messages at {args.bpm:g} BPM over {args.seconds:g} s (timing thread: {run['priority']} "
              f"priority; period {JACK_PERIOD} frames = {period_ms:.2f} ms)")
        print(f"  delivery error   {stats(run['delivery'])}   delivered {run['arrived']}/{run['sent']} "
              f"({run['arrived'] / max(1, run['sent']):.2%}); {run['incidents']} loss incidents; xruns: jackd "
              f"reported {run['xruns']}, the receiver saw {run['irregular']} skipped or repeated cycles")
        print(f"  host send error  {stats(run['send'])}")
        if run["textures"]:
            print(f"  textures made meanwhile: {len(run['textures'])}, "
                  f"{sum(run['textures']) / len(run['textures']):.1f} s each")
    for api in names:
        idle = runs[api, "engine idle"]
        for label in list(loads)[1:]:
            loaded = runs[api, label]
            change = (percentile(loaded["delivery"], 99) - percentile(idle["delivery"], 99)) * 1000
            print(f"\n{names[api]}: delivery p99 {percentile(idle['delivery'], 99) * 1000:.3f} ms idle, "
                  f"{percentile(loaded['delivery'], 99) * 1000:.3f} ms with {label} ({change:+.3f} ms); host send "
                  f"p99 {percentile(idle['send'], 99) * 1000:.3f} / {percentile(loaded['send'], 99) * 1000:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
