"""Running a MusicRNN one time step at a time, with the user's controls.

`Stepper` keeps what continuing needs (RNN state, the previous step's keys, the step
count), so generation and live sessions share it. Controls act on the masked logits of
each token: scale lock and pitch range ban keys, max polyphony bans everything but
STEP_END once reached, density scales the odds of ending a step, then temperature and
top-p (nucleus) sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from engine.data.piece import LOWEST, N_KEYS, ONSET, SOUNDING
from engine.models.music_rnn import MusicRNN

TONICS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "ionian": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10), "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11), "melodic minor": (0, 2, 3, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10), "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10), "locrian": (0, 1, 3, 5, 6, 8, 10),
    "major pentatonic": (0, 2, 4, 7, 9), "minor pentatonic": (0, 3, 5, 7, 10), "blues": (0, 3, 5, 6, 7, 10),
    "chromatic": tuple(range(12)),
}


def scale_pitch_classes(key: str) -> set[int]:
    """Pitch classes of a key such as "C", "F# minor", "Bb dorian", "e harmonic minor"."""
    text = key.strip().lower().replace("♯", "#").replace("♭", "b")
    if not text or text[0] not in TONICS:
        raise ValueError(f"cannot read key {key!r}: start with a tonic A-G, e.g. 'F# minor' or 'Bb major'")
    tonic, rest = TONICS[text[0]], text[1:]
    while rest[:1] in ("#", "b"):
        tonic += 1 if rest[0] == "#" else -1
        rest = rest[1:]
    mode = " ".join(rest.replace("-", " ").split()) or "major"
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} in key {key!r}; known: {', '.join(sorted(MODES))}")
    return {(tonic + i) % 12 for i in MODES[mode]}


@dataclass
class Controls:
    temperature: float = 1.0
    top_p: float = 1.0
    key: str | None = None       # scale lock, e.g. "D minor"; None: every key allowed
    low: int = LOWEST            # lowest MIDI pitch allowed
    high: int = LOWEST + N_KEYS - 1
    max_polyphony: int = 0       # 0: no limit
    density: float = 1.0         # >1 more notes per step, <1 fewer

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


class Stepper:
    """One stream of steps through a MusicRNN (eval mode, no gradients)."""

    def __init__(self, model: MusicRNN, bar_phase: int = 0):
        self.model = model.eval()
        self.layout = model.config.layout
        self.device = next(model.parameters()).device
        self.state = None
        self.prev = np.zeros(N_KEYS, np.int8)
        self.step = 0
        self.bar_phase = bar_phase

    def snapshot(self) -> tuple:
        return self.state, self.prev.copy(), self.step

    def restore(self, snap: tuple) -> None:
        self.state, prev, self.step = snap
        self.prev = prev.copy()

    def _cond(self) -> torch.Tensor:
        """The conditioning input of the current step (position in bar, previous keys), (1, 1, d)."""
        m = self.model
        prev = torch.as_tensor(self.prev > 0, dtype=torch.float32, device=self.device).view(1, 1, N_KEYS)
        pos = torch.tensor([[(self.step + self.bar_phase) % (m.config.bar_steps or 1)]], device=self.device)
        cond = torch.zeros(1, 1, m.config.d_embed, device=self.device)
        if m.bar_embed is not None:
            cond = cond + m.bar_embed(pos)
        if m.prev_proj is not None:
            cond = cond + m.prev_proj(prev)
        return cond

    def _run(self, inputs: list[int], cond: torch.Tensor) -> np.ndarray:
        """Read input tokens of the current step; the logits after the last one, as numpy."""
        m = self.model
        x = m.embed(torch.as_tensor(inputs, device=self.device)) + cond.view(1, -1)
        for i in range(len(inputs)):
            h, self.state = rnn_step(m.rnn, x[i:i + 1], self.state)
        return m.head(h[0]).float().cpu().numpy()

    @torch.inference_mode()
    def force(self, frame: np.ndarray) -> None:
        """Advance over a given step (priming, or notes the user played)."""
        tokens = self.layout.step_tokens(frame, self.prev)
        self._run([self.layout.step_end] + tokens[:-1], self._cond())
        self._end_step(frame)

    def _end_step(self, frame: np.ndarray) -> None:
        self.prev = frame.astype(np.int8)
        self.step += 1

    @torch.inference_mode()
    def sample(self, controls: Controls, rng: np.random.Generator, allowed: np.ndarray | None = None,
               required: np.ndarray | None = None) -> np.ndarray:
        """Sample one step; returns its roll row (2 onset, 1 held).

        `allowed`: keys that may sound (controls.allowed_keys() if None). `required`: keys that
        must sound, as held notes where the previous step had them (notes already promised to
        the player); they bypass the other controls.
        """
        lay, n = self.layout, N_KEYS
        allowed = controls.allowed_keys() if allowed is None else allowed
        required = np.zeros(n, bool) if required is None else required.astype(bool)
        # Keys banned by the controls, and by the spelling (held tokens need a sounding key).
        ban_keys = np.concatenate([~allowed, ~(allowed & (self.prev > 0))]) if lay.holds else ~allowed
        spelled = np.concatenate([np.ones(n, bool), self.prev > 0]) if lay.holds else np.ones(n, bool)
        key_col = np.arange(len(ban_keys)) % n
        cond = self._cond()
        frame = np.zeros(n, np.int8)
        token, floor, count = lay.step_end, 0, 0
        log_density = math.log(controls.density)
        while True:
            logits = self._run([token], cond)
            need = np.flatnonzero(required[floor:])
            if len(need):  # the next required key comes now, as a hold where possible
                k = floor + int(need[0])
                token = k + n if lay.holds and self.prev[k] > 0 else k
            else:
                ok = np.zeros(lay.vocab_size, bool)
                if not (controls.max_polyphony and count >= controls.max_polyphony):
                    ok[:-1] = spelled & ~ban_keys & (key_col >= floor)
                ok[-1] = True
                logits[-1] -= log_density
                token = _sample(np.where(ok, logits / controls.temperature, -np.inf), controls.top_p, rng)
            if token == lay.step_end:
                break
            k = lay.key_of(token)
            frame[k] = SOUNDING if lay.is_hold(token) or (not lay.holds and self.prev[k] > 0) else ONSET
            floor, count = k + 1, count + 1
        self._end_step(frame)  # the chosen STEP_END is read as the first input of the next step
        return frame


def rnn_step(rnn: torch.nn.LSTM | torch.nn.GRU, x: torch.Tensor, state: list | None):
    """One time step of a multi-layer nn.LSTM/nn.GRU (eval mode) for x (1, d_in).

    The same arithmetic as the module, written out: at batch size 1 the module's own call
    (oneDNN on CPU) costs several times more than these few matrix-vector products.
    State: a list per layer of (h, c) for an LSTM or h for a GRU; None for zeros.
    """
    new_state = []
    for layer in range(rnn.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        zeros = x.new_zeros(1, rnn.hidden_size)
        if isinstance(rnn, torch.nn.LSTM):
            h, c = state[layer] if state is not None else (zeros, zeros)
            i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            new_state.append((x, c))
        else:
            h = state[layer] if state is not None else zeros
            ir, iz, in_ = F.linear(x, w_ih, b_ih).chunk(3, dim=1)
            hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            x = (1 - z) * torch.tanh(in_ + r * hn) + z * h
            new_state.append(x)
    return x, new_state


def _sample(logits: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        sorted_p = p[order]
        drop = order[(np.cumsum(sorted_p) - sorted_p) >= top_p]  # keep the smallest prefix reaching top_p
        p[drop] = 0.0
        p /= p.sum()
    return int(rng.choice(len(p), p=p))
