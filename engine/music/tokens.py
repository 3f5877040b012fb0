"""Serialisation of a piano roll into tokens, one time step after another.

Each step becomes its sounding keys in ascending pitch order, then STEP_END. With
`holds=True` a key that continues from the previous step is written with its "held"
token and a key that starts with its "onset" token; with `holds=False` there is one
token per key. Token layout (n = 88 keys):

    holds=False: [0, n) key k sounds,  n = STEP_END                      (89 tokens)
    holds=True:  [0, n) key k starts,  [n, 2n) key k held,  2n = STEP_END (177 tokens)

Because each step has exactly one ascending spelling, a model that masks tokens which
break the order (see `floor` below) gives the exact probability of a step's key set as
the product of its token probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.music.piece import N_KEYS, ONSET, SOUNDING


@dataclass(frozen=True)
class TokenLayout:
    holds: bool = False
    n_keys: int = N_KEYS

    @property
    def step_end(self) -> int:
        return 2 * self.n_keys if self.holds else self.n_keys

    @property
    def vocab_size(self) -> int:
        return self.step_end + 1

    def key_of(self, token: int) -> int:
        return token % self.n_keys

    def is_hold(self, token: int) -> bool:
        return self.holds and self.n_keys <= token < 2 * self.n_keys

    def step_tokens(self, frame: np.ndarray, prev: np.ndarray | None) -> list[int]:
        """Tokens of one step (roll row), STEP_END included.

        With holds, a key sounding in `prev` and not marked as an onset is held;
        anything else that sounds is an onset.
        """
        keys = np.flatnonzero(frame)
        if not self.holds:
            return [int(k) for k in keys] + [self.step_end]
        out = []
        for k in keys:
            held = prev is not None and prev[k] > 0 and frame[k] != ONSET
            out.append(int(k) + self.n_keys if held else int(k))
        return out + [self.step_end]


def roll_to_tokens(roll: np.ndarray, layout: TokenLayout, prev: np.ndarray | None = None) -> np.ndarray:
    """All steps of `roll` as one int64 token array. `prev`: the row before the first."""
    out: list[int] = []
    for t in range(len(roll)):
        out += layout.step_tokens(roll[t], roll[t - 1] if t else prev)
    return np.asarray(out, dtype=np.int64)


def tokens_to_roll(tokens: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """The roll a token array spells; a trailing step without STEP_END is dropped."""
    rows: list[np.ndarray] = []
    row = np.zeros(layout.n_keys, dtype=np.int8)
    for tok in np.asarray(tokens).tolist():
        if tok == layout.step_end:
            rows.append(row)
            row = np.zeros(layout.n_keys, dtype=np.int8)
        elif 0 <= tok < layout.step_end:
            row[layout.key_of(tok)] = SOUNDING if (layout.is_hold(tok) or not layout.holds) else ONSET
        else:
            raise ValueError(f"token {tok} is outside the vocabulary of {layout.vocab_size}")
    if not rows:
        return np.zeros((0, layout.n_keys), dtype=np.int8)
    return np.stack(rows)


def token_context(tokens: np.ndarray, layout: TokenLayout, first_step: int = 0) -> dict[str, np.ndarray]:
    """What a model needs beside the tokens, for each token position i (the target):

    - "inputs": the token before (STEP_END before the first, as if a step just ended);
    - "step": the index of the step the target belongs to (first_step + steps so far);
    - "floor": the lowest key the target may name (one above the previous key of its step),
      so that masking keys below it leaves exactly one spelling per key set;
    - "written": (len, n_keys) int8, the keys named earlier in the target's step.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    inputs = np.concatenate([[layout.step_end], tokens[:-1]]).astype(np.int64)
    ends = tokens == layout.step_end
    step = first_step + np.concatenate([[0], np.cumsum(ends)[:-1]]).astype(np.int64)
    floor = np.zeros(len(tokens), dtype=np.int64)
    is_key = inputs != layout.step_end
    floor[is_key] = inputs[is_key] % layout.n_keys + 1
    # Keys named before each position (cumulative), minus those named before its step began.
    named = np.zeros((len(tokens) + 1, layout.n_keys), np.int16)
    keys_at = np.flatnonzero(~ends)
    named[keys_at + 1, tokens[keys_at] % layout.n_keys] = 1
    named = np.cumsum(named, axis=0)[:-1]
    step_start = np.searchsorted(step, step)
    written = (named - named[step_start]).astype(np.int8)
    return {"inputs": inputs, "step": step, "floor": floor, "written": written}
