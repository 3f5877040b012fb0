"""The rig for the MIDI bridge tests and bench/midi_bench.py: a headless JACK server, a JACK
MIDI receiver and sender, a tiny trained music model, the bridge as its own process, and
the comparison of what arrived with what the bridge logged it sent.

JACK runs with the dummy backend under a unique server name (DESIGN.md). The dummy
backend has occasional xruns that drop or duplicate an event, so received streams are
compared with the bridge's event log (`match_log`), and the number of dropped or
duplicated events is counted and bounded -- never silently ignored.
"""
from __future__ import annotations

import difflib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from engine.cli.demo import start_engine  # noqa: E402
from engine.client import Client  # noqa: E402
from midi_bridge import eventlog  # noqa: E402

JACK_PERIOD = 256
JACK_RATE = 48000
TINY = {"model": {"arch": "token", "holds": True, "d_hidden": 32, "d_embed": 16, "n_layers": 1}, "seq_steps": 32,
        "valid_fraction": 0.5}


# -- JACK ---------------------------------------------------------------------------------

class JackServer:
    """jackd with the dummy backend under a unique name; `env` points clients at it.

    Use as a context manager; it sets the environment of this process while it runs."""

    def __init__(self, period: int = JACK_PERIOD, rate: int = JACK_RATE, realtime: bool = False):
        self.name = f"atelier-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.period, self.rate = period, rate
        self.realtime = realtime  # asked for; falls back to --no-realtime where the OS refuses
        self.env = {"JACK_NO_AUDIO_RESERVATION": "1", "JACK_NO_START_SERVER": "1", "JACK_DEFAULT_SERVER": self.name}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "JackServer":
        if not shutil.which("jackd"):
            raise FileNotFoundError("jackd is not installed (Debian: apt-get install --no-install-recommends jackd2)")
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        self._log = Path(f"/tmp/{self.name}.log")
        if self.realtime and self._start(["-R", "-P", "70"]):
            return self
        self.realtime = False
        if not self._start(["--no-realtime"]):
            text = self._log.read_text(errors="replace")[-1000:]
            self.__exit__()
            raise RuntimeError(f"jackd did not come up:\n{text}")
        return self

    def _start(self, mode: list[str]) -> bool:
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(["jackd", "-n", self.name, *mode, "-d", "dummy", "-r", str(self.rate),
                                             "-p", str(self.period)], stdout=log, stderr=subprocess.STDOUT)
        up = subprocess.run(["jack_wait", "-w", "-t", "20"], capture_output=True, timeout=30)
        if up.returncode == 0 and self.process.poll() is None:
            return True
        self.process.kill()
        self.process.wait()
        return False

    def troubles(self) -> int:
        """How many xruns and late cycles jackd has reported so far (each can lose or garble events)."""
        text = self._log.read_text(errors="replace")
        return text.count("XRun") + text.count("Process error")

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in Path("/dev/shm").glob(f"jack*{self.name}*"):  # left behind if jackd was killed
            path.unlink(missing_ok=True)
        self._log.unlink(missing_ok=True)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Receiver:
    """A JACK MIDI input port that timestamps every message on the monotonic clock."""

    def __init__(self, name: str):
        import rtmidi

        self.client = f"recv-{name}"
        self.port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=self.client)
        self.port.ignore_types(sysex=True, timing=False, active_sense=True)
        self.messages: list[tuple[float, list[int]]] = []
        self._lock = threading.Lock()
        self.port.set_callback(self._on)
        self.port.open_virtual_port("in")
        self.name = f"{self.client}:in"

    def _on(self, event, _):
        with self._lock:
            self.messages.append((time.monotonic(), list(event[0])))

    def snapshot(self) -> list[tuple[float, list[int]]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.port.cancel_callback()
        self.port.close_port()
        self.port.delete()


class FrameReceiver:
    """A JACK MIDI input of our own (JACK-Client) that records each message's frame -- the
    cycle's last_frame_time plus the message's offset in it -- with the cycle's first frame
    and its monotonic time (JACK's estimate, read in that cycle), so a due time on the
    monotonic clock can be turned into the frame it falls on in the same cycle.

    With `extra_latency` (frames) its port reports that much more playback latency than the
    system's audio outputs, as a synth heard that long after audio written in the same frame
    would (JACK-Client has no latency callback: ctypes)."""

    def __init__(self, name: str, extra_latency: int = 0):
        import ctypes

        import jack

        from midi_bridge.jack_out import _Clock

        self.client = jack.Client(f"frames-{name}", no_start_server=True)
        self.port = self.client.midi_inports.register("in")
        self.clock = _Clock(self.client)
        if extra_latency:
            audio = self.client.get_ports(is_audio=True, is_input=True, is_physical=True)
            latency = extra_latency + max((self.clock.playback_latency(p)[1] for p in audio), default=0)
            lib, port = self.clock._lib, ctypes.c_void_p(int(jack._ffi.cast("uintptr_t", self.port._ptr)))
            span = (ctypes.c_uint32 * 2)(latency, latency)
            lib.jack_port_set_latency_range.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                        ctypes.POINTER(ctypes.c_uint32 * 2)]

            def on_latency(mode: int, _arg) -> None:
                if mode == 1:  # JackPlaybackLatency
                    lib.jack_port_set_latency_range(port, 1, ctypes.byref(span))

            self._on_latency = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)(on_latency)  # kept alive
            lib.jack_set_latency_callback(self.clock._ptr, self._on_latency, None)
        self.rate = self.client.samplerate
        self.events: list[tuple[float, int, int, float, list[int]]] = []  # (arrival, frame, cycle start, its time, msg)
        self.irregular: list[int] = []  # first frames of cycles that did not follow the one before
        self._previous: int | None = None
        self._lock = threading.Lock()
        self.client.set_process_callback(self._process)
        self.client.activate()
        self.name = self.port.name

    def _process(self, frames: int) -> None:
        start, begins = self.client.last_frame_time, None
        arrived = time.monotonic()
        if self._previous is not None and start - self._previous != frames:
            self.irregular.append(start)  # the dummy backend skipped or repeated a cycle (an xrun)
        self._previous = start
        for offset, data in self.port.incoming_midi_events():
            if begins is None:
                begins = self.clock.time_of(start)
            with self._lock:
                self.events.append((arrived, start + offset, start, begins, list(bytes(data))))

    def after_irregular(self, arrival: float, cycles: int = 4) -> bool:
        """Whether the cycle a message arrived in came within `cycles` periods after a skipped or
        repeated cycle (no client could write to the frames of a skipped cycle)."""
        with self._lock:
            start = next(e[2] for e in self.events if e[0] == arrival)
        period = self.client.blocksize
        return any(0 <= start - bad <= cycles * period for bad in self.irregular)

    def snapshot(self) -> list[tuple[float, list[int]]]:
        """(arrival, message), as Receiver.snapshot gives them (for match_log)."""
        with self._lock:
            return [(t, m) for t, _, _, _, m in self.events]

    def error_frames(self, arrival: float, due: float) -> float:
        """How many frames after the frame of `due` the message that arrived at `arrival` came."""
        with self._lock:
            _, frame, start, begins, _ = next(e for e in self.events if e[0] == arrival)
        return frame - (start + (due - begins) * self.rate)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


class Sender:
    """A JACK MIDI output port the bridge listens to (clock, the player's notes, CCs)."""

    def __init__(self, name: str):
        import rtmidi

        self.port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"send-{name}")
        self.port.open_virtual_port("out")
        self.name = f"send-{name}:out"
        self.sent: list[tuple[float, list[int]]] = []

    def send(self, message: list[int]) -> float:
        self.port.send_message(message)
        t = time.monotonic()
        self.sent.append((t, message))
        return t

    def close(self) -> None:
        self.port.close_port()
        self.port.delete()


class ClockSource:
    """Sends MIDI beat clock from a thread, on time (sleep, then spin), logging each pulse."""

    def __init__(self, sender):
        self.sender = sender
        self.pulses: list[tuple[float, int | None]] = []  # (sent at, song position in pulses or None)
        self.marks: dict[str, float] = {}
        self._next = time.monotonic() + 0.05

    def pulses_at(self, bpm: float, count: int, position: int | None) -> int | None:
        period = 60 / bpm / 24
        for _ in range(count):
            while time.monotonic() < self._next - 0.002:
                time.sleep(0.001)
            while time.monotonic() < self._next:
                pass
            t = self.sender.send([0xF8])
            self.pulses.append((t, position))
            if position is not None:
                position += 1
            self._next += period
        return position

    def mark(self, name: str, message: list[int]) -> None:
        self.marks[name] = self.sender.send(message)

    def time_of(self, position: int) -> float:
        return next(t for t, p in self.pulses if p == position)


class JackClock:
    """A DAW's MIDI beat clock as a DAW's audio engine sends it: a JACK client of our own writes
    each message at its exact frame from its process callback. ClockSource, an rtmidi port fed
    from a Python thread, is only as steady as that thread's scheduling: on a busy machine its
    pulses landed up to ~800 frames (17 ms) off their line, which no DAW does."""

    def __init__(self, name: str):
        import jack

        self.client = jack.Client(f"clock-{name}", no_start_server=True)
        self.port = self.client.midi_outports.register("out")
        self.name = self.port.name
        self.rate = self.client.samplerate
        self._queue: list[tuple[int, list[int]]] = []  # (frame, message), in frame order
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.client.set_process_callback(self._process)
        self.client.activate()

    def play(self, bpm: float, stopped: int, running: int, lead: float = 0.1) -> list[int]:
        """From `lead` seconds on: `stopped` pulses with the transport stopped (tempo only), Start,
        `running` pulses from song position 0, then Stop half a pulse after the last. Returns the
        running pulses' frames."""
        period = self.rate * 60 / bpm / 24
        first = self.client.frame_time + round(lead * self.rate)
        frames = [first + round(k * period) for k in range(stopped + running)]
        queue = [(f, [0xF8]) for f in frames[:stopped]] + [(frames[stopped] - 1, [0xFA])]
        queue += [(f, [0xF8]) for f in frames[stopped:]] + [(frames[-1] + round(period / 2), [0xFC])]
        with self._lock:
            self.finished.clear()
            self._queue = queue
        return frames[stopped:]

    def _process(self, frames: int) -> None:
        self.port.clear_buffer()
        start = self.client.last_frame_time
        with self._lock:
            while self._queue and self._queue[0][0] < start + frames:
                frame, message = self._queue.pop(0)
                self.port.write_midi_event(max(frame - start, 0), message)  # a skipped cycle's: late
                if not self._queue:
                    self.finished.set()

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


# -- the engine ---------------------------------------------------------------------------

@dataclass
class Engine:
    """An engine process (like tests/conftest.py's RunningEngine, usable outside pytest too)."""

    host: str
    port: int
    state_dir: Path
    models_dir: Path
    process: subprocess.Popen

    def client(self, name: str = "midi-bridge-tests") -> Client:
        return Client(self.host, self.port, token_file=self.state_dir / "token", name=name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_engine_in(tmp: Path, checkpoint: Path | None = None) -> Engine:
    """A real engine process with its own state and models folders (holding `checkpoint`)."""
    state, models = tmp / "state", tmp / "models"
    state.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        shutil.copy(checkpoint, models / checkpoint.name)
    process, ready = start_engine("cpu", state, {"ATELIER_MODELS_DIR": str(models)})
    return Engine(ready["host"], ready["port"], state, models, process)


def tiny_model(folder: Path) -> Path:
    """A tiny, untrained (seeded) music model saved in the engine's model store format.

    Training is tested with the music kind; here only the notes' timing matters, and an
    untrained tiny LSTM plays a few notes per beat, which is what these tests need."""
    import torch

    from engine.config import build
    from engine.music.config import MusicConfig
    from engine.music.token_model import MusicRNN
    from engine.store.checkpoints import ModelStore

    torch.manual_seed(0)
    cfg = build(MusicConfig, TINY)
    weights = {f"rnn.{k}": v for k, v in MusicRNN(cfg.model).state_dict().items()}
    ModelStore(folder, builtin=None).save("tiny", weights, {"kind": "music", "config": cfg.to_dict()})
    return folder / "tiny.safetensors"


# -- the bridge process -------------------------------------------------------------------

class Bridge:
    def __init__(self, args: list[str], engine, tmp: Path, jack_env: dict, model: str = "tiny", api: str = "jack"):
        self.log_path = tmp / f"bridge-{uuid.uuid4().hex[:6]}.jsonl"
        self.stderr_path = self.log_path.with_suffix(".stderr")
        # PYTHONFAULTHANDLER: a hung bridge, stopped by SIGABRT, prints where its threads were in Python
        env = {**os.environ, **jack_env, "ATELIER_STATE_DIR": str(engine.state_dir), "PYTHONPATH": str(REPO),
               "PYTHONFAULTHANDLER": "1"}
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "midi_bridge", "--api", api, "--model", model,
                                             "--event-log", str(self.log_path), *args],
                                            stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO)

    def records(self) -> list[dict]:
        return eventlog.read(self.log_path) if self.log_path.exists() else []

    def sent(self) -> list[dict]:
        return [r for r in self.records() if "seq" in r]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records() if r.get("event") == event]
            if found:
                return found[0]
            if self.process.poll() is not None:
                raise AssertionError(f"the bridge exited ({self.process.returncode}) before '{event}':\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"no '{event}' from the bridge within {timeout} s; {self.where_it_hangs()}")

    def where_it_hangs(self) -> str:
        """Stops a hung bridge; what it had logged, and where its threads were (PYTHONFAULTHANDLER)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return f"its last records: {self.records()[-5:]}\nits stderr:\n{self.stderr()}"

    def stop(self, sig=None, timeout: float = 15) -> int:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the bridge did not stop within {timeout} s:\n{self.stderr()}") from None



# -- comparing what arrived with what was sent --------------------------------------------

@dataclass
class Delivery:
    pairs: list[tuple[dict, float]]  # (logged send, arrival time), in order
    indices: list[int]               # where each pair's arrival is in the received list
    lost: int                        # logged sends that never arrived
    unlogged: int                    # arrivals that match no logged send (duplicated or garbled)
    incidents: int                   # separate moments at which the streams differ
    report: str
    missing: list[list[int]]         # the messages of the lost sends


def match_log(received: list[tuple[float, list[int]]], sent: list[dict], period: float = JACK_PERIOD / JACK_RATE
              ) -> Delivery:
    """Pair each logged send with its arrival, in order (a sequence alignment). Each message
    that differs is placed at its send (or arrival) time; differences within two JACK periods
    of each other count as one incident, as a dummy-backend xrun loses or garbles a whole
    period's worth of events at once."""
    a = [tuple(m) for _, m in received]
    b = [tuple(r["msg"]) for r in sent]
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    pairs, indices, lost, unlogged, times, lines, missing = [], [], 0, 0, [], [], []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs.extend((sent[j1 + k], received[i1 + k][0]) for k in range(i2 - i1))
            indices.extend(range(i1, i2))
            continue
        lost, unlogged = lost + (j2 - j1), unlogged + (i2 - i1)
        missing.extend(r["msg"] for r in sent[j1:j2])
        times += [sent[j]["sent"] for j in range(j1, j2)] + [received[i][0] for i in range(i1, i2)]
        lines.append(f"{tag}: received {[m for _, m in received[i1:i2]]} for sent "
                     f"{[(r['seq'], r['msg']) for r in sent[j1:j2]]}")
    times.sort()
    incidents = sum(1 for k, t in enumerate(times) if k == 0 or t - times[k - 1] > 2 * period)
    return Delivery(pairs, indices, lost, unlogged, incidents, "\n".join(lines[:12]), missing)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
