"""Running a music network (token or frame) one time step at a time, with the user's controls.

`Stepper` keeps what continuing needs (RNN state, the previous step's keys, the step
count), so generation and live sessions share it. Controls act on each token: scale lock
and pitch range ban keys, temperature divides the logits; then, on the probabilities, the
pull of the phrase being continued (phrase.py, unless `free`) chooses among the keys that
may start a note, density scales the chance of starting notes, and top-p (nucleus) sampling
draws the token. A step spelled with more keys than the voice limit (max polyphony, else
the voices of the training music) is drawn again, and so, under the part-writing rule
(no_parallels; by default on when the training music is part writing that avoids them), is
one that moves two voices in parallel fifths or octaves.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from engine.music.fast import FastRNN, fast_net  # noqa: F401 (FastRNN: re-exported)
from engine.music.keys import scale_pitch_classes
from engine.music.phrase import Phrase
from engine.music.piece import LOWEST, N_KEYS, ONSET, SOUNDING
from engine.music.style import step_parallels

VOICE_TRIES = 16  # draws of a step before one is cut to the voice limit


@dataclass
class Controls:
    temperature: float = 1.0
    top_p: float = 1.0
    key: str | None = None       # scale lock, e.g. "D minor"; None: every key allowed
    low: int = LOWEST            # lowest MIDI pitch allowed
    high: int = LOWEST + N_KEYS - 1
    max_polyphony: int = 0       # 0: the model's voices (Stepper.voices; none: no limit)
    density: float = 1.0         # >1 more new notes, <1 fewer
    free: bool = False           # True: no pull toward the key and register of the phrase continued
    # True: steps that move voices in parallel fifths/octaves are drawn again; None: as the training
    # music does (Stepper.avoids_parallels: on for part writing that avoids them)
    no_parallels: bool | None = None

    def checked(self) -> "Controls":
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not LOWEST <= self.low <= self.high <= LOWEST + N_KEYS - 1:
            raise ValueError(f"pitch range {self.low}..{self.high} must lie within 21..108 with low <= high")
        if self.max_polyphony < 0 or not self.density > 0:
            raise ValueError("max_polyphony must be >= 0 and density > 0")
        if self.key is not None:
            scale_pitch_classes(self.key)
        return self

    def allowed_keys(self) -> np.ndarray:
        """Bool (88,) of keys that may sound."""
        pitches = np.arange(LOWEST, LOWEST + N_KEYS)
        ok = (pitches >= self.low) & (pitches <= self.high)
        if self.key is not None:
            ok &= np.isin(pitches % 12, sorted(scale_pitch_classes(self.key)))
        return ok

    def updated(self, **changes) -> "Controls":
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown control(s) {sorted(unknown)}; known: {sorted(self.__dataclass_fields__)}")
        return replace(self, **changes).checked()


def repeat_distance(rng: np.random.Generator, shares: list[float]) -> int:
    """How many bars back the bar starting now repeats (0: a new bar), drawn with the training
    music's shares (engine.music.objective.bar_repeats_rate)."""
    u, total = rng.random(), 0.0
    for back, share in enumerate(shares, 1):
        total += share
        if u < total:
            return back
    return 0


class Stepper:
    """One stream of steps through a music network (eval mode, no gradients)."""

    def __init__(self, model: torch.nn.Module, bar_phase: int = 0, steps_per_bar: int | None = None,
                 voices: int = 0, avoids_parallels: bool = False):
        self.model = model.eval()
        self.voices = voices  # the most keys sounding at once when controls.max_polyphony is 0 (0: no limit)
        self.avoids_parallels = avoids_parallels  # the part-writing rule when controls.no_parallels is None
        self.redrawn, self.cut = 0, 0  # draws thrown away for the voice limit; steps drawn VOICE_TRIES times
        # The bar of the music played (3/4 at 16ths: 12), not the model's conditioning size (16).
        self.steps_per_bar = steps_per_bar or model.config.bar_steps or 1
        self.layout = model.config.layout
        self.net = fast_net(model)
        self.state = self.net.zero_state()
        self.prev = np.zeros(N_KEYS, np.int8)
        self.step = 0
        self.bar_phase = bar_phase
        self.phrase: Phrase | None = None  # what the music continues (phrase.py): new notes are pulled toward it
        self._pulls: dict[bool, np.ndarray] = {}

    def hear(self, phrase: Phrase | None) -> None:
        """From now on, start notes under the pull of this phrase (None: no pull)."""
        self.phrase, self._pulls = phrase, {}

    def _pull(self, controls: Controls) -> np.ndarray | None:
        if self.phrase is None or controls.free:
            return None
        with_key = controls.key is None  # a scale lock decides the key
        if with_key not in self._pulls:
            self._pulls[with_key] = self.phrase.pull(with_key)
        return self._pulls[with_key]

    def snapshot(self) -> tuple:
        return self.state, self.prev.copy(), self.step  # states are never changed in place

    def restore(self, snap: tuple) -> None:
        """Back to a snapshot taken earlier in this stream."""
        self.state, prev, self.step = snap
        self.prev = prev.copy()

    def _open(self):
        """A cursor over the current step, conditioned on its position in the bar and the previous keys."""
        pos = (self.step + self.bar_phase) % self.steps_per_bar  # the nets wrap it to their bar_steps
        return self.net.open(self.state, pos, self.prev > 0)

    def force(self, frame: np.ndarray) -> None:
        """Advance over a given step (priming, or notes the user played)."""
        cursor = self._open()
        for token in self.layout.step_tokens(frame, self.prev)[:-1]:
            cursor.read(token)
        self._end_step(frame, cursor)

    def _end_step(self, frame: np.ndarray, cursor) -> None:
        self.state = cursor.state
        self.prev = frame.astype(np.int8)
        self.step += 1

    def may_play(self, controls: Controls, frame: np.ndarray, required: np.ndarray) -> bool:
        """Whether a given step (a bar played again) keeps to the controls now in force: only keys they
        allow, within the voice limit, the required keys held on, and the part-writing rule."""
        sounding = frame > 0
        limit = controls.max_polyphony or self.voices
        no_parallels = self.avoids_parallels if controls.no_parallels is None else controls.no_parallels
        return bool(not (sounding & ~controls.allowed_keys()).any() and not (required & (frame != SOUNDING)).any()
                    and (not limit or sounding.sum() <= max(limit, required.sum()))
                    and not (no_parallels and step_parallels(np.flatnonzero(self.prev), np.flatnonzero(sounding))))

    def sample(self, controls: Controls, rng: np.random.Generator, allowed: np.ndarray | None = None,
               required: np.ndarray | None = None) -> np.ndarray:
        """Sample one step; returns its roll row (2 onset, 1 held).

        `allowed`: keys that may sound (controls.allowed_keys() if None). `required`: keys that
        must sound, as held notes where the previous step had them (notes already promised to
        the player); they bypass the other controls.

        At most `limit` keys sound (controls.max_polyphony, else the model's `voices`; held keys
        count): a step spelled with more is drawn again, so the step comes from the model's own
        distribution given that it fits, keeping bass and top as the model places them. After
        VOICE_TRIES draws the last is spelled with the step ending once the limit is reached.
        With the part-writing rule (controls.no_parallels; if None, the model's `avoids_parallels`)
        a step moving two voices in parallel fifths or octaves (engine.music.style.step_parallels)
        is drawn again too, and the last draw kept.
        """
        required = np.zeros(N_KEYS, bool) if required is None else required.astype(bool)
        limit = controls.max_polyphony or self.voices
        if limit:
            limit = max(limit, int(required.sum()))
        no_parallels = self.avoids_parallels if controls.no_parallels is None else controls.no_parallels
        opened = self._open()
        tokens = self._tokens(controls, allowed)
        for attempt in range(VOICE_TRIES if limit or no_parallels else 1):
            last = attempt == VOICE_TRIES - 1
            cursor, frame = self._spell(opened.clone(), controls, rng, tokens, required, limit, cut=last)
            if frame is not None and (last or not no_parallels or not step_parallels(
                    np.flatnonzero(self.prev), np.flatnonzero(frame))):
                break
        self.redrawn, self.cut = self.redrawn + attempt, self.cut + last
        self._end_step(frame, cursor)  # the token net reads the chosen STEP_END when the next step opens
        return frame

    def _tokens(self, controls: Controls, allowed: np.ndarray | None) -> tuple:
        """What a step's draws share: (tokens open at the step's start, STEP_END included; tokens
        that start a note, on which density and the pull act; the pull's weights on them or None)."""
        lay, n = self.layout, N_KEYS
        allowed = controls.allowed_keys() if allowed is None else allowed
        # Keys allowed by the controls and by the spelling (held tokens need a sounding key).
        open_tokens = np.ones(lay.vocab_size, bool)
        if lay.holds:
            open_tokens[:n], open_tokens[n:2 * n] = allowed, allowed & (self.prev > 0)
        else:
            open_tokens[:n] = allowed
        starts = np.zeros(lay.vocab_size, bool)
        starts[:n] = True if lay.holds else self.prev == 0
        pull = self._pull(controls)
        if pull is not None:
            pull = np.exp(np.concatenate([pull] * (lay.vocab_size // n) + [[0]]))[starts]
        return open_tokens, starts, pull

    def _spell(self, cursor, controls: Controls, rng: np.random.Generator, tokens: tuple,
               required: np.ndarray, limit: int, cut: bool):
        """(cursor, frame) of one draw of the step's tokens; frame None once more than `limit`
        keys are spelled, unless `cut`: then the step ends when `limit` keys sound."""
        lay, n = self.layout, N_KEYS
        end, holds = lay.step_end, lay.holds  # properties: read once, not per token
        open_tokens, starts, pull = tokens
        any_required = bool(required.any())
        frame = np.zeros(n, np.int8)
        floor, count = 0, 0
        while True:
            logits = cursor.logits()
            need = np.flatnonzero(required[floor:]) if any_required else ()
            if len(need):  # the next required key comes now, as a hold where possible
                k = floor + int(need[0])
                token = k + n if holds and self.prev[k] > 0 else k
            else:
                if controls.temperature != 1.0:
                    logits = logits / controls.temperature
                if cut and limit and count >= limit:  # only STEP_END is left
                    masked = np.full(end + 1, -np.inf)
                    masked[-1] = logits[-1]
                else:  # keys below the last one written cannot follow it
                    masked = np.where(open_tokens, logits, -np.inf)
                    masked[:floor] = -np.inf
                    if holds:
                        masked[n:n + floor] = -np.inf
                p = _softmax(masked)
                if pull is not None:
                    p = _pull_starts(p, starts, pull)
                # Fewer notes: fewer steps that start any (a chord once begun completes as the model likes,
                # else 0.25 thins chords too and leaves a tenth of the notes); more: more notes everywhere.
                if controls.density > 1 or (controls.density < 1 and not (frame == ONSET).any()):
                    p = _scale_starts(p, starts, controls.density)
                token = _sample(p, controls.top_p, rng)
            if token == end:
                return cursor, frame
            if limit and not cut and count >= limit:
                return cursor, None  # one key too many: this draw is thrown away
            cursor.read(token)
            k = token % n
            frame[k] = SOUNDING if (token >= n if holds else self.prev[k] > 0) else ONSET
            floor, count = k + 1, count + 1


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _pull_starts(p: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Token probabilities with the chance of starting a note shared among the keys again, each
    key's share weighted by `weights`: the pull chooses which notes start, not how many."""
    mass = p[starts]
    total, pulled = mass.sum(), mass * weights
    if not pulled.sum() > 0:
        return p
    out = p.copy()
    out[starts] = pulled * (total / pulled.sum())
    return out


def _scale_starts(p: np.ndarray, starts: np.ndarray, density: float) -> np.ndarray:
    """Token probabilities with the chance of starting a note (any token in `starts`) scaled by
    `density` below 1, and its odds above 1 (a chance cannot pass 1); holding notes and ending
    the step share the rest in their own proportions."""
    mass = float(p[starts].sum())
    if not 0.0 < mass < 1.0:
        return p
    scaled = density * mass if density < 1 else density * mass / (1 + (density - 1) * mass)
    return np.where(starts, p * (scaled / mass), p * ((1 - scaled) / (1 - mass)))


def _sample(p: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    """A token drawn from probabilities `p`, within the top-p nucleus."""
    if top_p < 1.0:
        order = np.argsort(-p)
        sorted_p = p[order]
        drop = order[(np.cumsum(sorted_p) - sorted_p) >= top_p]  # keep the smallest prefix reaching top_p
        p[drop] = 0.0
        p /= p.sum()
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return int(min(cdf.searchsorted(rng.random(), side="right"), len(p) - 1))
