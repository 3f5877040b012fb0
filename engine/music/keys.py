"""Keys and meters as MIDI files write them: key signatures ("D", "Bm") and time signatures (3, 4).

A key signature names a tonic and major or minor; `estimate_key` finds one from the notes
(Krumhansl-Kessler profiles against the pitch classes weighted by how long they sound) for
clips that carry none. `scale_pitch_classes` reads a scale lock such as "Bb dorian";
`signature_of` turns one into the nearest signature: its tonic, major or minor by the mode's third.
"""
from __future__ import annotations

import numpy as np

from engine.music.piece import LOWEST

MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm")
# mido's spellings: one name per signature, plus the enharmonic ones it also accepts.
SIGNATURES = set(MAJOR_NAMES + MINOR_NAMES) | {"C#", "Cb", "Gb", "A#m", "Abm", "D#m", "Db", "Bb"}

MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

DENOMINATORS = (1, 2, 4, 8, 16, 32)

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


def estimate_key(roll: np.ndarray) -> str | None:
    """The key signature whose profile best matches the roll's pitch classes; None if silent."""
    sounding = (np.asarray(roll) > 0).sum(axis=0).astype(float)  # steps each key sounds
    if not sounding.any():
        return None
    classes = np.zeros(12)
    np.add.at(classes, (LOWEST + np.arange(len(sounding))) % 12, sounding)
    best, name = -2.0, None
    for tonic in range(12):
        for profile, names in ((MAJOR_PROFILE, MAJOR_NAMES), (MINOR_PROFILE, MINOR_NAMES)):
            r = np.corrcoef(classes, np.roll(profile, tonic))[0, 1]
            if np.isfinite(r) and r > best:
                best, name = r, names[tonic]
    return name


def signature_of(key: str) -> str | None:
    """The key signature for a scale lock ("F# minor", "Bb dorian", "A"); None for chromatic."""
    scale_pitch_classes(key)  # raises ValueError, as the scale lock does
    text = key.strip().lower().replace("♯", "#").replace("♭", "b")
    tonic, rest, accidentals = TONICS[text[0]], text[1:], ""
    while rest[:1] in ("#", "b"):
        tonic += 1 if rest[0] == "#" else -1
        accidentals, rest = accidentals + rest[0], rest[1:]
    steps = MODES[" ".join(rest.replace("-", " ").split()) or "major"]
    if len(steps) == 12:
        return None
    minor = 3 in steps and 4 not in steps
    name = text[0].upper() + accidentals + ("m" if minor else "")
    return name if name in SIGNATURES else (MINOR_NAMES if minor else MAJOR_NAMES)[tonic % 12]


def parse_meter(text: str) -> tuple[int, int]:
    """(numerator, denominator) from "3/4", "6/8"; ValueError saying what is allowed otherwise."""
    num, sep, den = text.strip().partition("/")
    try:
        meter = (int(num), int(den))
    except ValueError:
        meter = None
    if not sep or meter is None or not 1 <= meter[0] <= 32 or meter[1] not in DENOMINATORS:
        raise ValueError(f"cannot read meter {text!r}: write it as beats/unit, e.g. '3/4', '6/8' or '4/4' "
                         f"(1-32 beats; unit one of {', '.join(map(str, DENOMINATORS))})")
    return meter


def bar_steps(meter: tuple[int, int], steps_per_quarter: int) -> int:
    """Steps in one bar: 4/4 at 16ths is 16, 3/4 and 6/8 are 12."""
    return max(1, int(round(meter[0] * 4 / meter[1] * steps_per_quarter)))
