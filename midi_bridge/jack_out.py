"""A native JACK MIDI output: each message at its exact frame inside the JACK cycle.

rtmidi's JACK output hands every message to the next process cycle, at the cycle's first
frame: a note lands up to one period late (5.3 ms at 256 frames / 48 kHz). This output
takes each message with its due time on the monotonic clock, LEAD_PERIODS periods ahead,
into a bounded queue; the JACK process callback writes it at the frame that time falls on,
from JACK's own estimate of when the running cycle's first frame is (`jack_frames_to_time`,
read in that cycle: extrapolating JACK's clock a few periods ahead instead errs by up to a
period on a busy machine), so a receiver reads it at that frame, as a DAW's own MIDI track
would play it. Messages without a due time (panics,
resets) go out at once, and frames never go backwards: a message is never written before
one handed over earlier, so a panic always follows the notes it ends.

`flush()` waits until the cycle that wrote the last message has run -- the confirmation the
bridge waits for before it closes the port. `on_connect` is called whenever a new connection
of the port is live: the bridge sends its reset then, so a DAW that reconnects to a restarted
bridge's virtual port gets its hanging notes ended.

Uses the JACK-Client package (cffi, libjack); its binding lacks libjack's clock and latency
functions, which are called through ctypes on the same client.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable

import jack

from midi_bridge.scheduler import REALTIME_PRIORITY, raise_priority

LEAD_PERIODS = 2          # messages are handed over this many periods before they are due
LEAD_MARGIN = 0.002       # ... and this much more (the timing thread's wake-up, the callback's)
QUEUE_LIMIT = 4096        # messages waiting for their cycle; more means the server stopped running cycles


class JackOutputError(Exception):
    """No JACK server, or the port could not be made or connected; says what to do."""


class _Clock:
    """libjack's clock functions (not in JACK-Client's binding) on a JACK-Client client."""

    def __init__(self, client: jack.Client):
        lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
        lib.jack_get_time.restype = ctypes.c_uint64
        lib.jack_time_to_frames.restype = ctypes.c_uint32
        lib.jack_time_to_frames.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.jack_frames_to_time.restype = ctypes.c_uint64
        lib.jack_frames_to_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.jack_port_get_latency_range.restype = None
        lib.jack_port_get_latency_range.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_uint32 * 2)]
        self._lib = lib
        self._ptr = ctypes.c_void_p(int(jack._ffi.cast("uintptr_t", client._ptr)))
        self._offset, self._measured = 0.0, -1e9

    def playback_latency(self, port: jack.Port) -> tuple[int, int]:
        """The port's playback latency range in frames (jack_port_get_latency_range, JackPlaybackLatency)."""
        found = (ctypes.c_uint32 * 2)()
        self._lib.jack_port_get_latency_range(ctypes.c_void_p(int(jack._ffi.cast("uintptr_t", port._ptr))), 1,
                                              ctypes.byref(found))
        return found[0], found[1]

    def offset(self) -> float:
        """JACK's clock minus the monotonic clock, in microseconds (JACK may count from another
        origin). The best of a few paired readings (the closest pair: no preemption between its two
        reads), kept for a second: the two clocks run at the same rate."""
        now = time.monotonic()
        if now - self._measured > 1.0:
            readings = []
            for _ in range(5):
                before = time.monotonic()
                jack_now = self._lib.jack_get_time()
                after = time.monotonic()
                readings.append((after - before, jack_now - (before + after) * 5e5))
            self._offset, self._measured = min(readings)[1], now
        return self._offset

    def time_of(self, frame: int) -> float:
        """The monotonic time of `frame`."""
        return (self._lib.jack_frames_to_time(self._ptr, frame & 0xFFFFFFFF) - self.offset()) / 1e6


def close_client(client: jack.Client) -> None:
    """Deactivate (if the server still answers) and close."""
    try:
        client.deactivate()
    except jack.JackError:
        pass
    client.close()


class JackOutput:
    """A JACK client with one MIDI output port, virtual or connected to `destination`."""

    api = "jack"

    def __init__(self, client: jack.Client, port_name: str = "out", destination: str | None = None,
                 realtime: bool = True):
        self.client = client
        self.clock = _Clock(self.client)
        self.port = self.client.midi_outports.register(port_name)
        self.period = self.client.blocksize / self.client.samplerate
        self.lead = LEAD_PERIODS * self.period + LEAD_MARGIN
        self.name = destination or self.port.name
        self.virtual = destination is None
        self.cycles = 0            # process cycles run
        self.late = 0              # timed messages whose frame had passed when their cycle came (sent at offset 0)
        self.dropped = 0           # messages refused because the queue was full
        self._handed: deque[tuple[float, int, bytes, bool]] = deque()  # (due, seq, message, timed): to the callback
        self._waiting: list[tuple[float, int, bytes, bool]] = []        # the callback's own heap
        self._seq = itertools.count()
        self._last_due = 0.0       # due times handed over never go backwards
        self._last_seq = -1        # the last message handed over
        self._written = (-1, -1)   # (seq, cycle) of the last message written
        self._lock = threading.Lock()
        # libjack makes its process thread real-time only when the server runs real-time; the bridge
        # asks for it itself (above its timing thread), where the OS allows, on the first cycle.
        self._raise = realtime
        self.on_connect: Callable[[], None] | None = None  # called once a new connection of the port is live
        self.client.set_process_callback(self._process)
        self.client.set_port_connect_callback(self._connected, only_available=False)
        self.client.activate()
        if destination is not None:
            try:
                self.client.connect(self.port, destination)
            except jack.JackError as e:
                self.close()
                raise JackOutputError(f"cannot connect to {destination!r} ({e})") from None
        self._wait_live(destination)

    def _wait_live(self, destination: str | None, timeout: float = 1.0) -> bool:
        """Wait until the connection is in the graph the server runs (JACK switches graphs between
        cycles, later on a busy server) and two cycles have run: what is sent now arrives."""
        deadline = time.monotonic() + timeout
        while destination is not None and time.monotonic() < deadline:
            if self.port.is_connected_to(destination):
                break
            time.sleep(0.001)
        return self.wait_cycles(2, max(0.0, deadline - time.monotonic()) + 0.1)

    # -- the scheduler's side --------------------------------------------------------------

    def send(self, message: list[int], due: float | None = None) -> None:
        """Queue `message` for monotonic time `due` (now if None). Times never go backwards: a
        message never goes out before one handed over earlier."""
        with self._lock:
            if len(self._handed) >= QUEUE_LIMIT:
                self.dropped += 1
                return
            at = max(time.monotonic() if due is None else due, self._last_due)
            self._last_due = at
            seq = next(self._seq)
            self._last_seq = seq
            self._handed.append((at, seq, bytes(message), due is not None))

    def flush(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until every message handed over was written and the cycle
        that wrote it has run; True when confirmed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seq, cycle = self._written
            if seq >= self._last_seq and self.cycles > cycle + 1:
                return True
            time.sleep(0.001)
        return False

    def _connected(self, a: jack.Port | None, b: jack.Port | None, connect: bool) -> None:
        """JACK's notification thread: a connection was made or broken somewhere in the graph."""
        mine = self.port.name
        if not connect or self.on_connect is None or mine not in (a and a.name, b and b.name):
            return
        other = b.name if a is not None and a.name == mine else a.name if a is not None else None

        def when_live() -> None:
            if self._wait_live(other) and self.on_connect is not None:
                self.on_connect()

        threading.Thread(target=when_live, name="atelier-midi-connect", daemon=True).start()

    def wait_cycles(self, count: int, timeout: float = 1.0) -> bool:
        target, deadline = self.cycles + count, time.monotonic() + timeout
        while self.cycles < target and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.cycles >= target

    def latency(self) -> tuple[int, int]:
        """The port's playback latency range in frames, as JACK reports it (what a DAW compensates)."""
        return self.clock.playback_latency(self.port)

    def behind_audio(self) -> float:
        """How much later than audio written in the same frame to the system's outputs a message
        written now is heard, in seconds (the port's playback latency beyond theirs, e.g. a
        synth's): what a bridge following a DAW's clock sends early. Never negative."""
        outputs = self.client.get_ports(is_audio=True, is_input=True, is_physical=True)
        audio = max((self.clock.playback_latency(port)[1] for port in outputs), default=0)
        return max(0, self.latency()[1] - audio) / self.client.samplerate

    def close(self) -> None:
        close_client(self.client)

    # -- the JACK process thread ----------------------------------------------------------

    def _process(self, frames: int) -> None:
        if self._raise:
            self._raise = False
            raise_priority(REALTIME_PRIORITY + 1)
        self.port.clear_buffer()
        handed, waiting = self._handed, self._waiting
        while handed:
            heapq.heappush(waiting, handed.popleft())
        if not waiting:
            self.cycles += 1
            return
        # This cycle's first frame on the monotonic clock, from JACK's estimate for this very cycle.
        begins = self.clock.time_of(self.client.last_frame_time)
        rate, written = self.client.samplerate, None
        while waiting:
            offset = round((waiting[0][0] - begins) * rate)
            if offset >= frames:
                break
            _, seq, message, timed = heapq.heappop(waiting)
            if offset < 0 and timed:
                self.late += 1
            try:
                self.port.write_midi_event(max(0, offset), message)
            except jack.JackError:
                self.dropped += 1  # the cycle's MIDI buffer is full
            written = seq
        if written is not None:
            self._written = (written, self.cycles)
        self.cycles += 1
