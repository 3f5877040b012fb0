"""A live stream of notes for the MIDI bridge, with the RNN state kept between requests.

Time is counted in ticks from the start of the session (`ticks_per_beat` per quarter
note; step 0 is the first beat of a bar). `next_beats(n)` returns every note that starts
in the next n beats, each with its full duration: to know when a note ends the session
samples ahead of what it has returned. Changing controls or feeding the player's notes
throws that unreturned look-ahead away, so new settings apply from the next returned
beat; notes already returned keep sounding as promised (the model is made to hold them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.music.blas import one_blas_thread
from engine.music.frame_model import MusicFrameRNN
from engine.music.phrase import Phrase
from engine.music.piece import LOWEST, N_KEYS, ONSET, SOUNDING
from engine.music.sampling import Controls, Stepper, repeat_distance
from engine.music.token_model import MusicRNN

MAX_PHRASE_STEPS = 8192  # a phrase fed (or primed) at once; its roll takes 0.7 MB


@dataclass
class NoteEvent:
    start: int      # ticks from the session start
    duration: int   # ticks
    pitch: int      # MIDI note number
    velocity: int
    channel: int    # 0-15

    def to_dict(self) -> dict:
        return asdict(self)


class MusicSession:
    def __init__(self, model: MusicRNN | MusicFrameRNN, steps_per_quarter: int, *, seed: int = 0, controls: Controls | None = None,
                 priming: list[NoteEvent | dict] | None = None, ticks_per_beat: int = 480, channel: int = 0,
                 velocity: int = 80, max_note_beats: float = 8.0, steps_per_bar: int | None = None,
                 voices: int = 0, avoids_parallels: bool = False, bar_repeats: list[float] | None = None):
        if ticks_per_beat % steps_per_quarter:
            raise ValueError(f"ticks_per_beat {ticks_per_beat} must be a multiple of the model's "
                             f"{steps_per_quarter} steps per beat")
        if not 0 <= channel <= 15 or not 1 <= velocity <= 127:
            raise ValueError("channel must be 0..15 and velocity 1..127")
        self.steps_per_quarter = steps_per_quarter
        self.ticks_per_beat = ticks_per_beat
        self.step_ticks = ticks_per_beat // steps_per_quarter
        # The stream's bar (3/4 at 16ths: 12 steps); the model hears its position in it.
        self.bar_steps = steps_per_bar or model.config.bar_steps or 4 * steps_per_quarter
        self.channel, self.velocity = channel, velocity
        self.max_note_steps = max(1, int(round(max_note_beats * steps_per_quarter)))
        self.controls = (controls or Controls()).checked()
        self.rng = np.random.default_rng(seed)
        # the voice limit and the part-writing rule where the controls set none
        self.stepper = Stepper(model, steps_per_bar=self.bar_steps, voices=voices, avoids_parallels=avoids_parallels)
        self.roll: list[np.ndarray] = []          # the session's timeline, one row per step
        self.bar_repeats = bar_repeats            # how often a bar replays one 1-4 bars back (MusicModel.generate)
        self.repeat: list[np.ndarray] = []        # the rest of a bar being played again
        self.horizon = 0                          # onsets before this step have been returned
        self.snaps = {0: self.stepper.snapshot()}  # model state before each step >= horizon
        self.sounding_until = np.zeros(N_KEYS, np.int64)  # returned notes sound before this step
        if priming:
            self.feed(priming)

    @property
    def position(self) -> int:
        """Ticks returned so far: the next call's events start at or after this tick."""
        return self.horizon * self.step_ticks

    def set(self, **controls) -> None:
        """Change temperature, top_p, key, low, high, max_polyphony or density from the next beat."""
        self.controls = self.controls.updated(**controls)
        self._rewind()

    def feed(self, notes: list[NoteEvent | dict]) -> None:
        """The player's phrase (call): the model hears it as the latest music, and the notes it
        returns next answer it. Ticks are counted from the phrase start; the session clock
        does not move. The phrase is padded with silence in front to whole bars."""
        notes = [n if isinstance(n, NoteEvent) else NoteEvent(**n) for n in notes]
        if not notes:
            return
        spans = []
        for n in notes:
            if not LOWEST <= n.pitch < LOWEST + N_KEYS or n.start < 0 or n.duration <= 0:
                raise ValueError(f"bad note {n}: pitch must be 21..108, start >= 0, duration > 0")
            s = int(round(n.start / self.step_ticks))
            spans.append((s, max(s + 1, int(round((n.start + n.duration) / self.step_ticks))), n.pitch - LOWEST))
        length = max(e for _, e, _ in spans)
        if length > MAX_PHRASE_STEPS:  # before the phrase's roll is allocated
            raise ValueError(f"the phrase lasts {length:,} steps ({length // self.steps_per_quarter:,} beats); "
                             f"feed at most {MAX_PHRASE_STEPS:,} steps ({MAX_PHRASE_STEPS // self.steps_per_quarter:,} "
                             "beats) at once")
        pad = -length % self.bar_steps
        phrase = np.zeros((pad + length, N_KEYS), np.int8)
        for s, e, k in spans:
            phrase[pad + s:pad + e, k] = SOUNDING
        for s, _, k in spans:
            phrase[pad + s, k] = ONSET
        self._rewind()
        with one_blas_thread():
            for frame in phrase:
                self.stepper.force(frame)
        self.stepper.hear(Phrase.of(phrase))
        self.snaps = {self.horizon: self.stepper.snapshot()}

    def next_beats(self, n: float) -> list[NoteEvent]:
        """Notes starting in the next n beats, sorted by start then pitch."""
        with one_blas_thread():  # steady speed while other work keeps a core busy
            return self._next_beats(n)

    def _next_beats(self, n: float) -> list[NoteEvent]:
        steps = n * self.steps_per_quarter
        if steps <= 0 or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"n={n} beats must be > 0 and a whole number of steps "
                             f"({self.steps_per_quarter} per beat)")
        start, target = self.horizon, self.horizon + int(round(steps))
        self._generate_to(target)
        events = []
        for s in range(start, target):
            for k in np.flatnonzero(self.roll[s] == ONSET):
                if self.sounding_until[k] > s:
                    continue  # a returned note still sounds here: the model was made to hold it
                end = s + 1
                while end - s < self.max_note_steps:
                    self._generate_to(end + 1)
                    if self.roll[end][k] != SOUNDING:
                        break
                    end += 1
                self.sounding_until[k] = end
                events.append(NoteEvent(s * self.step_ticks, (end - s) * self.step_ticks, LOWEST + int(k),
                                        self.velocity, self.channel))
        self.horizon = target
        self.snaps = {i: snap for i, snap in self.snaps.items() if i >= target}
        return events

    def _generate_to(self, steps: int) -> None:
        while len(self.roll) < steps:
            t = len(self.roll)
            self.snaps.setdefault(t, self.stepper.snapshot())
            required = self.sounding_until > t
            prev = self.roll[t - 1] if t else np.zeros(N_KEYS, np.int8)
            if self.bar_repeats and t % self.bar_steps == 0:
                back = repeat_distance(self.rng, self.bar_repeats) * self.bar_steps
                self.repeat = self.roll[t - back:t] if back and t >= back else []
            if self.repeat and self.stepper.may_play(self.controls, self.repeat[0], required):
                frame = self.repeat.pop(0)
                self.stepper.force(np.where((frame > 0) & (prev == 0), ONSET, frame))
            else:
                self.repeat = []  # what the controls now allow, drawn by the model
                frame = self.stepper.sample(self.controls, self.rng, required=required)
            # Every note start is marked as an onset, also from a model without onset tokens.
            frame = np.where((frame > 0) & (prev == 0), ONSET, frame).astype(np.int8)
            self.roll.append(frame)

    def _rewind(self) -> None:
        """Forget the look-ahead sampled past the horizon."""
        self.repeat = []
        if len(self.roll) > self.horizon:
            self.stepper.restore(self.snaps[self.horizon])
            del self.roll[self.horizon:]
        self.snaps = {self.horizon: self.stepper.snapshot()}
