"""Call and response: hears the player's phrase on the input and says when it has ended.

A phrase is the notes played since the last response. It ends when every key is up and
`silence_beats` beats have passed since the last note ended, or when the player sends the
`respond` control (a CC). Times are stream beats, as the scheduler counts them.
"""
from __future__ import annotations

import threading

from midi_bridge.notes import Note


class PhraseRecorder:
    def __init__(self, silence_beats: float = 2.0):
        self.silence_beats = silence_beats
        self._lock = threading.Lock()
        self._down: dict[tuple[int, int], tuple[float, int]] = {}  # key -> (start beat, velocity)
        self._notes: list[Note] = []
        self._last_end = 0.0
        self._forced = False

    def key_down(self, channel: int, pitch: int, velocity: int, beat: float) -> None:
        with self._lock:
            if (channel, pitch) in self._down:
                self._end((channel, pitch), beat)
            self._down[(channel, pitch)] = (beat, velocity)

    def key_up(self, channel: int, pitch: int, beat: float) -> None:
        with self._lock:
            if (channel, pitch) in self._down:
                self._end((channel, pitch), beat)

    def force(self) -> None:
        """End the phrase now (the `respond` control)."""
        with self._lock:
            self._forced = True

    def _end(self, key: tuple[int, int], beat: float) -> None:
        start, velocity = self._down.pop(key)
        self._notes.append(Note(start, max(beat - start, 1e-3), key[1], velocity, key[0]))
        self._last_end = max(self._last_end, beat)

    def take_if_ended(self, beat: float) -> list[Note] | None:
        """The phrase, if it ended by stream beat `beat` (then a new phrase begins), else None."""
        with self._lock:
            if self._forced:
                for key in list(self._down):
                    self._end(key, beat)
            elif not self._notes or self._down or beat - self._last_end < self.silence_beats:
                return None
            self._forced = False
            phrase, self._notes = sorted(self._notes, key=lambda n: (n.start, n.pitch)), []
            return phrase or None
