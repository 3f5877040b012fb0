"""A native JACK MIDI input: each message with the time of its own frame.

rtmidi's JACK input hands messages over when its thread gets to them, so a clock pulse is
timed a few ms after the frame the DAW wrote it at (4 ms measured on a loaded machine, up to
a period and more), and notes following that clock come late by as much. This input reads
each message's frame in the JACK process callback (the cycle's last_frame_time plus the
message's offset) and passes it on with that frame's time on the monotonic clock, from
JACK's estimate for the running cycle (jack_out._Clock), so the bridge hears the DAW's clock
exactly when the DAW placed it.

The listener runs on the JACK process thread: it must be quick (the bridge's is: a clock
update, a queue put). On a loaded machine it can still miss cycles: JACK goes on without a
client that is not ready, and the messages of those cycles never reach it. The input sees
the gap in its frames, counts it, and calls `on_missed`, so a clock follower can count the
pulses it lost (one lost pulse puts every later note a pulse late).

A call that comes late can also run on into the next cycle and read that cycle's messages;
JACK then runs the client for that cycle too, with the same messages (in CI a pulse heard
twice put every later note a pulse early). The input hands on each message once: only those
after the frame of the latest one it handed on, and counts the repeats it drops.
"""
from __future__ import annotations

from collections.abc import Callable

import jack

from midi_bridge.jack_out import JackOutputError, _Clock, close_client


class JackInput:
    """A JACK client with one MIDI input port, virtual or connected from `source`."""

    api = "jack"

    def __init__(self, client: jack.Client, port_name: str = "in", source: str | None = None):
        self.client = client
        self.clock = _Clock(self.client)
        self.port = self.client.midi_inports.register(port_name)
        self.name = source or self.port.name
        self.virtual = source is None
        self._listener: Callable[[list[int], float], None] | None = None
        self.on_missed: Callable[[], None] | None = None
        self.missed_cycles = 0
        self.repeated_messages = 0
        self._heard_to: int | None = None  # the frame of the latest message handed on
        self._next_frame: int | None = None
        self.client.set_process_callback(self._process)
        self.client.activate()
        if source is not None:
            try:
                self.client.connect(source, self.port)
            except jack.JackError as e:
                self.close()
                raise JackOutputError(f"cannot connect from {source!r} ({e})") from None

    def listen(self, listener: Callable[[list[int], float], None] | None) -> None:
        """Call `listener(message, monotonic time of its frame)` for each message (None: stop)."""
        self._listener = listener

    def close(self) -> None:
        self._listener = None
        close_client(self.client)

    def _process(self, frames: int) -> None:
        listener = self._listener
        frame = self.client.last_frame_time
        expected, self._next_frame = self._next_frame, (frame + frames) & 0xFFFFFFFF
        if expected is not None and _after(frame, expected):
            self.missed_cycles += max(1, round(((frame - expected) & 0xFFFFFFFF) / frames))
            if listener is not None and self.on_missed is not None:
                self.on_missed()
        heard_to = self._heard_to
        begins = None
        for offset, data in self.port.incoming_midi_events():
            if listener is None:
                continue  # drained unheard
            if begins is None:
                read_frame = self.client.last_frame_time  # the cycle whose messages these are (a late call ran on)
                begins = self.clock.time_of(read_frame)
            at = (read_frame + offset) & 0xFFFFFFFF
            if heard_to is not None and not _after(at, heard_to):
                self.repeated_messages += 1
                continue
            self._heard_to = at
            listener(list(bytes(data)), begins + offset / self.client.samplerate)


def _after(frame: int, other: int) -> bool:
    """`frame` comes after `other` on JACK's 32-bit frame counter, which wraps."""
    return 0 < (frame - other) & 0xFFFFFFFF < 1 << 31
