"""A piece of music as a quantised piano roll over the 88 piano keys.

`Piece.roll` is an int8 array of shape (steps, 88); column k is MIDI pitch 21 + k.
Cell values: 0 silent, 1 sounding (held, or onset unknown), 2 onset (the note starts
on this step). Sources that know where notes start (MIDI files, music21 scores) mark
onsets with 2; sources that do not (the JSB benchmark files) use only 0 and 1.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

LOWEST = 21  # A0
N_KEYS = 88  # A0..C8
SILENT, SOUNDING, ONSET = 0, 1, 2


@dataclass
class Piece:
    name: str
    roll: np.ndarray  # int8 (steps, 88)
    steps_per_quarter: int = 4
    steps_per_bar: int = 16
    bar_phase: int = 0  # position in the bar of step 0 (a pickup starts late in its bar)
    has_onsets: bool = True
    bpm: float = 120.0                 # tempo (a MIDI file's first set_tempo)
    meter: tuple[int, int] = (4, 4)    # time signature (a MIDI file's first); steps_per_bar follows it
    key: str | None = None             # key signature as MIDI writes it ("D", "Bm"), when the source has one

    @property
    def steps(self) -> int:
        return int(self.roll.shape[0])

    def pitch_range(self) -> tuple[int, int] | None:
        """(lowest, highest) column index that sounds anywhere, or None when silent."""
        cols = np.flatnonzero(self.roll.any(axis=0))
        return (int(cols[0]), int(cols[-1])) if len(cols) else None


def roll_from_steps(steps: list[list[int]]) -> np.ndarray:
    """A (steps, 88) int8 roll from lists of sounding MIDI pitches (no onset marks)."""
    roll = np.zeros((len(steps), N_KEYS), dtype=np.int8)
    for t, pitches in enumerate(steps):
        for p in pitches:
            if not LOWEST <= p < LOWEST + N_KEYS:
                raise ValueError(f"pitch {p} at step {t} is outside the piano range 21..108")
            roll[t, p - LOWEST] = SOUNDING
    return roll


def transposed(piece: Piece, semitones: int) -> Piece:
    """The piece shifted by whole semitones; raises if a note would leave the keyboard."""
    if semitones == 0:
        return piece
    span = piece.pitch_range()
    if span is not None and not (0 <= span[0] + semitones and span[1] + semitones < N_KEYS):
        raise ValueError(f"transposing {piece.name} by {semitones} leaves the 88-key range")
    roll = np.zeros_like(piece.roll)
    if semitones > 0:
        roll[:, semitones:] = piece.roll[:, :-semitones]
    else:
        roll[:, :semitones] = piece.roll[:, -semitones:]
    return replace(piece, roll=roll)


def transpose_limits(piece: Piece, max_shift: int) -> tuple[int, int]:
    """The shifts in [-max_shift, max_shift] that keep every note on the keyboard."""
    span = piece.pitch_range()
    if span is None:
        return 0, 0
    return max(-max_shift, -span[0]), min(max_shift, N_KEYS - 1 - span[1])


def roll_notes(roll: np.ndarray) -> list[tuple[int, int, int]]:
    """Notes (start step, end step exclusive, column) of a roll, sorted by start then pitch.

    A note starts where a key begins to sound or carries an onset mark, and lasts while
    the key keeps sounding without a new onset.
    """
    r = np.asarray(roll)
    on = r > 0
    before = np.vstack([np.zeros((1, r.shape[1]), bool), on[:-1]])
    starts = on & (~before | (r == ONSET))
    notes = []
    for t, k in zip(*np.nonzero(starts)):
        end = t + 1
        while end < len(r) and r[end, k] == SOUNDING:
            end += 1
        notes.append((int(t), int(end), int(k)))
    notes.sort()
    return notes


def split_by_file(pieces: list[Piece], valid_fraction: float, seed: int = 0) -> tuple[list[Piece], list[Piece]]:
    """Train and valid lists, whole pieces apart, chosen by a seeded shuffle of names."""
    if not pieces:
        return [], []
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].name)
    np.random.default_rng(seed).shuffle(order)
    n_valid = int(round(len(pieces) * valid_fraction))
    if valid_fraction > 0 and len(pieces) >= 2:
        n_valid = min(max(n_valid, 1), len(pieces) - 1)
    valid = sorted(order[:n_valid])
    train = sorted(order[n_valid:])
    return [pieces[i] for i in train], [pieces[i] for i in valid]
