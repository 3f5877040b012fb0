"""Musical time on the monotonic clock: an internal tempo, or the DAW's MIDI beat clock.

A clock maps song beats (quarter notes from the song start) to `time.monotonic()` seconds
and back. `InternalClock` runs at a fixed tempo from a start time. `MidiClock` follows
incoming MIDI beat clock (24 pulses per quarter note) with Start, Stop, Continue and Song
Position Pointer.

Tempo tracking: pulses arrive with jitter (JACK delivers them once per period, a busy host
adds more), so the pulse times are fitted with a straight line over the last beat (24
pulses) -- smooth and steady at a constant tempo. When the tempo changes, the newest pulses
all land on one side of the line; after CHANGE_PULSES such pulses in a row the fit forgets
the older ones and re-locks within a few pulses, instead of dragging the old tempo along.

Lost pulses: a JACK input that missed cycles on a loaded machine says so (`missed`); the
pulses between the last one heard and the next (steady: a DAW writes them at exact frames)
count as received, so the song position stays the DAW's instead of a pulse behind for good.

Never a beat that did not come: `horizon()` is the last song position a note may be sent
for -- the latest pulse received plus one pulse. The scheduler holds back every note-on
past it, so a clock that stops without a Stop plays nothing after its last pulse plus one
pulse interval; `check_timeout` then stops the transport (and silences sounding notes).
"""
from __future__ import annotations

import threading
from collections import deque

PPQN = 24
CLOCK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2

FIT_PULSES = 24      # one beat of pulses in the tempo fit
CHANGE_PULSES = 3    # this many pulses in a row off the line by more than CHANGE_SECONDS: the tempo changed
CHANGE_SECONDS = 0.004
MIN_BPM, MAX_BPM = 20.0, 400.0
LOST_PULSES = 4      # no pulse for this many pulse intervals (and at least LOST_SECONDS): the clock is lost
LOST_SECONDS = 0.1


class InternalClock:
    """A fixed tempo: beat 0 falls at `start_time` (monotonic seconds)."""

    def __init__(self, bpm: float, start_time: float):
        if not MIN_BPM <= bpm <= MAX_BPM:
            raise ValueError(f"tempo {bpm} BPM is out of range; use {MIN_BPM:g}..{MAX_BPM:g}")
        self.bpm = float(bpm)
        self.start_time = start_time
        self.running = True

    def time_at(self, beat: float) -> float:
        return self.start_time + beat * 60.0 / self.bpm

    def beat_at(self, t: float) -> float:
        return (t - self.start_time) * self.bpm / 60.0

    def horizon(self) -> float:
        return float("inf")


class MidiClock:
    """Follows MIDI beat clock. Feed it every realtime message with its arrival time.

    `message()` returns ("start", song_beat) when the transport starts running (at the first
    pulse after Start or Continue, as the MIDI spec has it), ("stop", song_beat) on Stop or
    when pulses stop coming (`check_timeout`), else None.
    """

    def __init__(self, default_bpm: float = 120.0):
        self._lock = threading.Lock()
        self._pulses: deque[tuple[int, float]] = deque(maxlen=FIT_PULSES)  # (pulse index, arrival time)
        self._index = -1             # index of the latest pulse, counting every pulse ever received
        self._period = 60.0 / (default_bpm * PPQN)
        self._origin = 0.0           # fitted arrival time of pulse 0 (line: origin + period * index)
        self._next_position = 0      # song position (in pulses) of the next pulse to play
        self._last_position = 0      # song position of the latest pulse played
        self._pending_start = False  # Start or Continue received, waiting for its first pulse
        self._deaf = False           # the input missed cycles since the latest pulse
        self.running = False

    # -- input ---------------------------------------------------------------------------

    def message(self, data: list[int] | tuple[int, ...], t: float) -> tuple[str, float] | None:
        status = data[0]
        with self._lock:
            if status == CLOCK:
                return self._pulse(t)
            if status == START:
                self._next_position, self._pending_start = 0, True
                return self._stop_locked() if self.running else None
            if status == CONTINUE:
                self._pending_start = not self.running  # a Continue while running changes nothing
                return None
            if status == STOP:
                self._pending_start = False
                return self._stop_locked() if self.running else None
            if status == SONG_POSITION and len(data) >= 3 and not self.running:
                self._next_position = ((data[2] & 0x7F) << 7 | (data[1] & 0x7F)) * 6  # in 16ths
            return None

    def missed(self) -> None:
        """The input missed cycles (a JACK client on a loaded machine) and the pulses in them: the
        next pulse's distance from the last one tells how many."""
        with self._lock:
            self._deaf = True

    def check_timeout(self, now: float) -> tuple[str, float] | None:
        """A transport whose pulses stopped without a Stop message counts as stopped."""
        with self._lock:
            if self.running and self._pulses and now - self._pulses[-1][1] > max(LOST_SECONDS,
                                                                                  LOST_PULSES * self._period):
                return self._stop_locked()
        return None

    def _stop_locked(self) -> tuple[str, float]:
        self.running = False
        return "stop", self._next_position / PPQN

    def _pulse(self, t: float) -> tuple[str, float] | None:
        if self._pulses and t - self._pulses[-1][1] > 8 * self._period + 0.05:
            self._pulses.clear()  # a pause in the pulses: the old tempo says nothing about the new one
        elif self._deaf and self._pulses:
            lost = max(0, round((t - self._pulses[-1][1]) / self._period) - 1)
            self._index += lost
            if self.running or self._pending_start:
                self._next_position += lost
        self._deaf = False
        self._index += 1
        self._pulses.append((self._index, t))
        self._fit()
        event = None
        if self._pending_start:
            self._pending_start, self.running = False, True
            event = ("start", self._next_position / PPQN)
        if self.running:
            self._last_position = self._next_position
            self._next_position += 1
        return event

    def _fit(self) -> None:
        pulses = self._pulses
        if len(pulses) >= CHANGE_PULSES + 3:
            head = list(pulses)[:-CHANGE_PULSES]
            origin, period = _line(head, self._period)
            off = [t - (origin + period * i) for i, t in list(pulses)[-CHANGE_PULSES:]]
            if all(d > CHANGE_SECONDS for d in off) or all(d < -CHANGE_SECONDS for d in off):
                for _ in range(len(pulses) - CHANGE_PULSES):
                    pulses.popleft()
        if len(pulses) >= 2:
            origin, period = _line(list(pulses), self._period)
            if 60.0 / (MAX_BPM * PPQN) <= period <= 60.0 / (MIN_BPM * PPQN):
                self._origin, self._period = origin, period
                return
        index, t = pulses[-1]
        self._origin = t - self._period * index

    # -- queries -------------------------------------------------------------------------

    @property
    def bpm(self) -> float:
        return 60.0 / (self._period * PPQN)

    def time_at(self, beat: float) -> float:
        """When song `beat` is (or was) due, predicted from the latest pulses."""
        with self._lock:
            index = self._index + (beat * PPQN - self._last_position)
            return self._origin + self._period * index

    def horizon(self) -> float:
        """The last song beat that may sound: one pulse past the latest pulse (nothing while stopped)."""
        with self._lock:
            return (self._last_position + 1) / PPQN if self.running else float("-inf")

    def beat_at(self, t: float) -> float:
        with self._lock:
            if not self.running:
                return self._next_position / PPQN
            latest = self._origin + self._period * self._index
            return (self._last_position + (t - latest) / self._period) / PPQN


def _line(points: list[tuple[int, float]], fallback_period: float) -> tuple[float, float]:
    """Least-squares line t = origin + period * index through the points."""
    n = len(points)
    mean_i = sum(i for i, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    var = sum((i - mean_i) ** 2 for i, _ in points)
    if var == 0:
        return mean_t - fallback_period * mean_i, fallback_period
    period = sum((i - mean_i) * (t - mean_t) for i, t in points) / var
    return mean_t - period * mean_i, period
