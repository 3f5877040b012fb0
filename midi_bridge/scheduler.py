"""The real-time part: sends each note at its due time on the monotonic clock.

Notes wait in a queue in *stream* beats (the beats of the engine's music, bar-aligned from
0). The transport maps them to *song* beats (song = stream + offset), and the clock maps
song beats to monotonic seconds. The offset is fixed while the transport runs; when it
starts or resumes, the stream picks up at its next bar line on the song's next bar line.

Timing: one thread sleeps until SPIN_SECONDS before the next due time (waking early when
the queue, the clock or the transport change), then spins on the monotonic clock and
sends. An output that places messages by their due time itself (the native JACK output)
gets each one `lead` seconds early, with its due time. It never talks to the engine. Every note-on is sent only after its note-off is in
the queue (note length capped), and every way out ends in `panic()`. No note-on is sent
past the clock's horizon (a followed clock: its latest pulse plus one pulse): a note
waits there until the next pulse arrives (`wake()`), so a beat the DAW did not reach never
plays. Following a DAW's clock, `compensation` makes up for an output path slower than the
DAW's audio (a synth's latency): notes go that much early, to be heard with the DAW's audio of
their beat, and the horizon moves by as much plus the hand-over (`lead`): a clock that stops
without a Stop can then leave up to that much more music to be heard.
"""
from __future__ import annotations

import gc
import heapq
import itertools
import math
import os
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Callable, Protocol

from midi_bridge.eventlog import EventLog
from midi_bridge.notes import Note, SoundingNotes, note_off, note_on

SPIN_SECONDS = 0.003     # sleep until this long before a due time, then spin
MAX_SLEEP = 0.02         # re-read the clock at least this often (a followed clock moves)
COLLECT_MARGIN = 0.01    # collect garbage (when the bridge turned automatic collection off) only this far ahead of a send
LATE_DROP_SECONDS = 0.1  # a note-on later than this is skipped (with its note-off), not sent late
HISTORY = 256            # notes played, kept to prime a new session after a reconnect
REALTIME_PRIORITY = 20   # SCHED_FIFO priority of the timing thread, where the OS allows it (below JACK's)
HELPER_PRIORITY = 10     # the bridge's other threads: they share the interpreter lock with the timing thread,
                         # and one preempted while holding it would delay a send (priority inversion)


class Clock(Protocol):
    running: bool
    bpm: float

    def time_at(self, beat: float) -> float: ...

    def beat_at(self, t: float) -> float: ...

    def horizon(self) -> float: ...


def next_bar(beat: float, bar_beats: float) -> float:
    """The first bar line at or after `beat`."""
    return math.ceil(beat / bar_beats - 1e-9) * bar_beats


class Scheduler:
    def __init__(self, send: Callable[[list[int], float | None], None], clock: Clock, *,
                 bar_beats: float = 4.0, latency: float = 0.0, max_note_beats: float = 8.0,
                 channels: frozenset[int] = frozenset(), log: EventLog | None = None, realtime: bool = True,
                 lead: float = 0.0):
        self._send_raw = send  # send(message, due time, or None for now)
        self.lead = lead       # hand each message over this long before it is due (an output that timestamps)
        self.clock = clock
        self.bar_beats = bar_beats
        self.latency = latency  # seconds added to every due time (negative: send early)
        self.compensation = 0.0  # seconds the output is heard after the DAW's audio: sent that much early
        self.max_note_beats = max_note_beats
        self._channels = set(channels)
        self.log = log or EventLog(None)
        self.sounding = SoundingNotes()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._ons: list[tuple[float, int, Note]] = []                  # (stream start, seq, note)
        self._offs: list[tuple[float, int, int, int, int]] = []        # (stream end, seq, channel, pitch, token)
        self._seq = itertools.count()
        self._offset = 0.0           # song beat = stream beat + offset, while running
        self._running = False
        self._resume_at = 0.0        # stream beat where the music stopped (or will start)
        self._muted = False
        self._quit = False
        self._history: deque[Note] = deque(maxlen=HISTORY)
        self.error: BaseException | None = None
        self.realtime = realtime
        self.priority = "normal"  # what the timing thread got: "realtime", "raised" or "normal"
        self.stats = {"note_on": 0, "note_off": 0, "late_dropped": 0, "muted": 0}
        self._thread = threading.Thread(target=self._run, name="atelier-midi-scheduler", daemon=True)

    # -- control (any thread) ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """The clock moved (a pulse arrived): look at the next event again."""
        self._wake.set()

    def push(self, notes: list[Note]) -> None:
        with self._lock:
            for note in notes:
                heapq.heappush(self._ons, (note.start, next(self._seq), note))
                self._channels.add(note.channel)
        self._wake.set()

    def drop_from(self, stream_beat: float) -> int:
        """Forget queued notes that start at or after `stream_beat` (regenerate, a new response)."""
        with self._lock:
            keep = [item for item in self._ons if item[0] < stream_beat - 1e-9]
            dropped = len(self._ons) - len(keep)
            heapq.heapify(keep)
            self._ons = keep
        self._wake.set()
        return dropped

    def pending(self) -> int:
        with self._lock:
            return len(self._ons)

    def last_queued(self) -> float | None:
        with self._lock:
            return max((item[0] for item in self._ons), default=None)

    def playhead(self, now: float | None = None) -> float:
        """The stream beat playing now (where it will resume, while stopped)."""
        with self._lock:
            if not self._running:
                return self._resume_at
            return self.clock.beat_at(time.monotonic() if now is None else now) - self._offset

    def song_to_stream(self, song_beat: float) -> float:
        with self._lock:
            return song_beat - self._offset

    @property
    def running(self) -> bool:
        return self._running

    def transport_started(self, song_beat: float) -> None:
        """The transport runs from `song_beat`: the stream resumes at its next bar line on the
        song's next bar line; queued notes before that point are skipped."""
        with self._lock:
            resume = next_bar(self._resume_at, self.bar_beats)
            self._offset = next_bar(song_beat, self.bar_beats) - resume
            self._ons = [item for item in self._ons if item[0] >= resume - 1e-9]
            heapq.heapify(self._ons)
            self._resume_at = resume
            self._running = True
            self.log.note("transport", state="running", song_beat=song_beat, offset=self._offset)
        self._wake.set()

    def transport_stopped(self, reason: str = "stop") -> None:
        with self._lock:
            if self._running:
                self._resume_at = self.clock.beat_at(time.monotonic()) - self._offset
            self._running = False
            self.log.note("transport", state="stopped", reason=reason, stream_beat=self._resume_at)
            self.panic(reason)
        self._wake.set()

    def set_muted(self, muted: bool) -> None:
        with self._lock:
            if muted and not self._muted:
                for message in self.sounding.release_all():
                    self._send(message, None, "mute")
                self._offs.clear()
            self._muted = muted
            self.log.note("mute", muted=muted)

    def send_now(self, message: list[int], why: str = "") -> None:
        with self._lock:
            self._send(message, None, why)

    @property
    def channels(self) -> frozenset[int]:
        """Every channel used (a panic's channels)."""
        with self._lock:
            return frozenset(self._channels)

    def panic(self, reason: str) -> None:
        """Note-off for every sounding note, then CC 123 and CC 120 on every channel used."""
        with self._lock:
            self._offs.clear()
            for message in self.sounding.panic_messages(self._channels):
                self._send(message, None, "panic")
            self.log.note("panic", reason=reason)

    def history(self, since: float) -> list[Note]:
        """Notes played from stream beat `since` on."""
        with self._lock:
            return [n for n in self._history if n.start >= since]

    def context(self, since: float, cut: float) -> list[Note]:
        """The music from stream beat `since` up to `cut`: notes played and notes queued, each cut
        short at `cut` (what a new engine session is primed with to continue from `cut`)."""
        with self._lock:
            queued = [item[2] for item in self._ons]
            notes = [n for n in (*self._history, *queued) if since - 1e-9 <= n.start < cut - 1e-9]
        notes.sort(key=lambda n: (n.start, n.pitch))
        return [replace(n, duration=min(n.duration, cut - n.start)) for n in notes]

    def close(self, reason: str = "exit") -> None:
        """Stop the timing thread and silence everything; safe to call more than once."""
        self._quit = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with self._lock:
            self._running = False
            self.panic(reason)

    # -- the timing thread ---------------------------------------------------------------

    def _head(self) -> tuple[float, bool] | None:
        """The next event's stream beat and whether it is a note-off (note-offs first on ties).
        A note-on past the clock's horizon waits (for the next pulse); note-offs do not."""
        on = self._ons[0][0] if self._ons else None
        # Compensating, a note leaves that much (and the hand-over) before its beat: the horizon moves as far.
        early = (self.compensation + self.lead) * self.clock.bpm / 60 if self.compensation else 0.0  # in beats
        if on is not None and on + self._offset > self.clock.horizon() + early + 1e-9:
            on = None
        if self._offs and (on is None or self._offs[0][0] <= on):
            return self._offs[0][0], True
        if on is not None:
            return on, False
        return None

    def _run(self) -> None:
        if self.realtime:
            self.priority = raise_priority()
        self.log.note("timing_thread", priority=self.priority)
        try:
            while not self._quit:
                self._wake.clear()
                with self._lock:
                    head = self._head() if self._running else None
                    due = (self.clock.time_at(head[0] + self._offset) + self.latency - self.compensation
                           if head else None)
                if due is None:
                    collect_garbage()
                    self._wake.wait(MAX_SLEEP)
                    continue
                hand_over = due - self.lead
                wait = hand_over - time.monotonic() - SPIN_SECONDS
                if wait > COLLECT_MARGIN:
                    collect_garbage()
                if wait > 0:
                    self._wake.wait(min(wait, MAX_SLEEP))
                    continue
                while time.monotonic() < hand_over:
                    pass
                with self._lock:
                    if self._running and self._head() == head:
                        self._fire(head[1], due)
        except BaseException as e:  # reported by the bridge, which then shuts down cleanly
            self.error = e

    def _fire(self, is_off: bool, due: float) -> None:
        if is_off:
            end, _, channel, pitch, token = heapq.heappop(self._offs)
            if self.sounding.release(channel, pitch, token):
                self._send(note_off(channel, pitch), due, "", end + self._offset)
                self.stats["note_off"] += 1
            return
        start, _, note = heapq.heappop(self._ons)
        if self._muted:
            self.stats["muted"] += 1
            return
        if time.monotonic() - due > LATE_DROP_SECONDS:
            self.stats["late_dropped"] += 1
            return
        token, before = self.sounding.strike(note.channel, note.pitch)
        for message in before:
            self._send(message, due, "restrike", start + self._offset)
        # The note-off is queued before the note-on leaves: no note-on without its note-off.
        end = start + min(note.duration, self.max_note_beats)
        heapq.heappush(self._offs, (end, next(self._seq), note.channel, note.pitch, token))
        self._send(note_on(note.channel, note.pitch, note.velocity), due, "", start + self._offset)
        self._history.append(note)
        self.stats["note_on"] += 1

    def _send(self, message: list[int], due: float | None, why: str, beat: float | None = None) -> None:
        self._send_raw(message, due)
        sent = time.monotonic()
        self.log.sent(message, sent if due is None else due, sent, beat, why)


def collect_garbage() -> None:
    """Where automatic collection is off, what it would have done by now (same thresholds)."""
    if gc.isenabled():
        return
    young, middle, old = gc.get_count()
    threshold, middle_threshold, old_threshold = gc.get_threshold()
    if young > threshold:
        gc.collect(2 if old > old_threshold else 1 if middle > middle_threshold else 0)


def raise_priority(priority: int = REALTIME_PRIORITY) -> str:
    """Give the calling thread real-time scheduling (Linux SCHED_FIFO) where the OS allows it,
    else a higher nice level, so that a busy machine does not delay the sends. Returns what it got.

    On Linux a user gets SCHED_FIFO through an rtprio limit (e.g. the `audio` group that JACK
    setups create); on macOS and Windows the default scheduling is kept."""
    tid = threading.get_native_id()
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
            return "realtime"
        except (OSError, PermissionError):
            pass
    if hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, -10 if priority >= REALTIME_PRIORITY else -5)
            return "raised"
        except (OSError, PermissionError):
            pass
    return "normal"
