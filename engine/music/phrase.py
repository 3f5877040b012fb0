"""What a phrase asks of its answer: its key and its register.

Music that continues a phrase (a primer, or the player's call in a live session) chooses the
pitches of its new notes under a pull toward that phrase: each key's share of the chance of
starting a note is weighted by a Gaussian around the phrase's mean pitch (as wide as its
notes' spread times REGISTER_SCALE, at least REGISTER_MIN semitones) and divided by
e^KEY_PULL outside the phrase's key (estimated from its notes, engine/music/keys.py). The pull
chooses which notes start, not how many (density decides that); notes already sounding are
not pulled. A scale lock replaces the key part; the `free` control turns the pull off.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.music.keys import MAJOR_NAMES, MINOR_NAMES, estimate_key
from engine.music.piece import LOWEST, N_KEYS, roll_notes

KEY_PULL = 2.5        # nats: an out-of-key note 12x less likely to start than the model says
REGISTER_MIN = 4.0    # semitones: the narrowest register pull (a phrase of one repeated note)
REGISTER_SCALE = 1.25

MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor and its leading tone


@dataclass(frozen=True)
class Phrase:
    key: str | None  # key signature as keys.py names it ("D", "Bm")
    centre: float    # mean MIDI pitch of its notes
    spread: float    # their standard deviation

    @classmethod
    def of(cls, roll: np.ndarray) -> "Phrase | None":
        """The key and register of a roll's notes; None if it has none."""
        notes = roll_notes(roll)
        if not notes:
            return None
        pitches = LOWEST + np.array([k for _, _, k in notes], float)
        return cls(estimate_key(roll), float(pitches.mean()), float(pitches.std()))

    def pitch_classes(self) -> set[int]:
        if self.key in MAJOR_NAMES:
            return {(MAJOR_NAMES.index(self.key) + s) % 12 for s in MAJOR_STEPS}
        return {(MINOR_NAMES.index(self.key) + s) % 12 for s in MINOR_STEPS}

    def pull(self, with_key: bool = True) -> np.ndarray:
        """Log-weights (88,) of starting each key."""
        pitches = LOWEST + np.arange(N_KEYS)
        width = max(REGISTER_MIN, REGISTER_SCALE * self.spread)
        out = -0.5 * ((pitches - self.centre) / width) ** 2
        if with_key and self.key is not None:
            out = out - KEY_PULL * ~np.isin(pitches % 12, sorted(self.pitch_classes()))
        return out.astype(np.float32)
