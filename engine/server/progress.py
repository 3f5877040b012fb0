"""A job's events on their way to the loop thread, progress thinned to a rate.

A job that reports hundreds of times a second (music reports every bar) would otherwise wake the
loop for each report, and every wake-up is a turn for the GIL between the job's thread and the
loop's: the loop fell behind, and a cancel sent after the first bar was read after the last.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable

Deliver = Callable[[bytes, bool], None]  # (frame, final: the job's outcome), called on the loop thread


class ProgressThrottle:
    """A job listener: progress reaches `deliver` at most `hz` times a second, the latest report
    each time; a report with a preview (a sample sheet, a morph frame) and the outcome go at once,
    after any report held back, so nothing arrives out of order and the last word is never lost.
    Frames are encoded by `encode`: the outcome and previews on the job's thread (they may hold
    large arrays), thinned progress on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hz: float, deliver: Deliver,
                 encode: Callable[[dict], bytes]):
        self.loop, self.interval, self.deliver, self.encode = loop, 1.0 / hz, deliver, encode
        self._lock = threading.Lock()
        self._held: dict | None = None  # the latest progress report not yet delivered
        self._scheduled = False  # a flush of the held report is on the loop's timer
        self._passing = 0  # previews and outcomes on their way to the loop, each with the report held before it
        self._last_sent = float("-inf")

    def __call__(self, event: dict) -> None:
        """The job's listener; runs on the job's thread."""
        try:
            if event["type"] == "progress" and event.get("preview") is None:
                with self._lock:
                    self._held = event
                    if self._scheduled or self._passing:
                        return
                    self._scheduled = True
                self.loop.call_soon_threadsafe(self._schedule)
            else:
                frame = self.encode(event)
                with self._lock:
                    held, self._held = self._held, None
                    self._passing += 1
                self.loop.call_soon_threadsafe(self._pass, held, frame, event["type"] != "progress")
        except RuntimeError:  # the loop has shut down with the engine
            pass

    def _schedule(self) -> None:
        self.loop.call_later(max(0.0, self._last_sent + self.interval - self.loop.time()), self._flush)

    def _flush(self) -> None:
        with self._lock:
            self._scheduled = False
            if self._passing:  # a report held now came after a preview still on its way: _pass sends it
                return
            event, self._held = self._held, None
        if event is not None:
            self._send(event)

    def _pass(self, held: dict | None, frame: bytes, final: bool) -> None:
        if held is not None:
            self._send(held)
        self.deliver(frame, final)
        with self._lock:
            self._passing -= 1
            schedule = self._held is not None and not self._passing and not self._scheduled
            self._scheduled |= schedule
        if schedule:
            self._schedule()

    def _send(self, event: dict) -> None:
        self._last_sent = self.loop.time()
        self.deliver(self.encode(event), False)
