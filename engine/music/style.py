"""Style measures of piano rolls, for comparing generated music with the real pieces of a corpus.

Each measure reads Pieces (engine.music.piece: a roll of 0 silent / 1 sounding / 2 onset, its bar
length and bar phase) and is pure numpy. `style_of` pools them over a set of pieces; `style_goals`
compares a generated set with the real one and with a baseline's:

- notes in key: share of notes whose pitch class lies in the best-fitting scale (12 major and 12
  harmonic-minor scales; the one holding most of the piece's notes), pooled over notes;
- key confidence: the Krumhansl-Kessler correlation of the best key (engine.music.keys' profiles);
- histograms of note lengths (16th-note bins), polyphony (keys sounding per step) and onset
  position in the bar (in steps); distances between histograms are total variation (half the L1
  distance of the normalised histograms, 0 = same, 1 = disjoint);
- repeated-bar share: of the whole, non-silent bars, those equal (pitches and onsets) to an
  earlier bar of the same piece; a bar played 4 times gives 3/4;
- parallel fifths and octaves per 100 chord changes (see `parallels`).
"""
from __future__ import annotations

import numpy as np

from engine.music.keys import MAJOR_PROFILE, MINOR_PROFILE
from engine.music.piece import LOWEST, Piece, roll_notes

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
# Note-length bins in 16ths at 4 steps per quarter: 1/16, 1/8, dotted 1/8, 1/4, dotted 1/4 (5-6),
# 1/2 (7-8), dotted 1/2 (9-12), whole and longer.
LENGTH_EDGES = (1, 2, 3, 4, 5, 7, 9, 13)
LENGTH_LABELS = ("1/16", "1/8", "3/16", "1/4", "3/8", "1/2", "3/4", "1+")
MAX_POLYPHONY = 8  # the last polyphony bin holds 8 or more keys at once


def _classes(columns: np.ndarray) -> np.ndarray:
    return (LOWEST + np.asarray(columns)) % 12


def _scales() -> np.ndarray:
    """(24, 12) bool: row t is the major scale on tonic t, row 12 + t the harmonic minor."""
    rows = [np.isin((np.arange(12) - t) % 12, scale) for scale in (MAJOR_SCALE, HARMONIC_MINOR) for t in range(12)]
    return np.array(rows)


_SCALES = _scales()


def notes_in_key(piece: Piece) -> tuple[int, int]:
    """(notes in the best-fitting scale, notes) of a piece."""
    notes = roll_notes(piece.roll)
    if not notes:
        return 0, 0
    counts = np.bincount(_classes([k for _, _, k in notes]), minlength=12)
    return int((_SCALES @ counts).max()), len(notes)


def key_confidence(piece: Piece) -> float | None:
    """The best Krumhansl-Kessler correlation over the 24 keys (pitch classes weighted by how long
    they sound, as engine.music.keys.estimate_key reads them); None when every pitch class sounds
    equally long (silence, or the chromatic scale evenly), which no key fits."""
    sounding = (piece.roll > 0).sum(axis=0)
    classes = np.bincount(_classes(np.arange(len(sounding))), weights=sounding, minlength=12)
    if not classes.std():
        return None
    best = max(np.corrcoef(classes, np.roll(profile, tonic))[0, 1]
               for profile in (MAJOR_PROFILE, MINOR_PROFILE) for tonic in range(12))
    return float(best)


def note_lengths(piece: Piece) -> np.ndarray:
    """Counts of notes per LENGTH_BINS bin (lengths read at 4 steps per quarter)."""
    scale = 4 / piece.steps_per_quarter
    lengths = np.array([(end - start) * scale for start, end, _ in roll_notes(piece.roll)])
    return np.bincount(np.searchsorted(LENGTH_EDGES, lengths, side="right") - 1, minlength=len(LENGTH_EDGES))


def polyphony(piece: Piece) -> np.ndarray:
    """Counts of steps by how many keys sound (0 .. MAX_POLYPHONY or more)."""
    return np.bincount(np.minimum((piece.roll > 0).sum(axis=1), MAX_POLYPHONY), minlength=MAX_POLYPHONY + 1)


def onset_positions(piece: Piece) -> np.ndarray:
    """Counts of note onsets by their step in the bar (0 = the downbeat), length steps_per_bar."""
    starts = np.array([start for start, _, _ in roll_notes(piece.roll)], int)
    return np.bincount((starts + piece.bar_phase) % piece.steps_per_bar, minlength=piece.steps_per_bar)


def pitch_range(piece: Piece) -> int | None:
    """Semitones from the lowest to the highest key that sounds; None when silent."""
    span = piece.pitch_range()
    return None if span is None else span[1] - span[0]


def repeated_bars(piece: Piece) -> tuple[int, int]:
    """(bars equal to an earlier bar of the piece, bars): whole bars only, silent bars left out."""
    bar, first = piece.steps_per_bar, (-piece.bar_phase) % piece.steps_per_bar
    seen, repeats, bars = set(), 0, 0
    for start in range(first, piece.steps - bar + 1, bar):
        cells = piece.roll[start:start + bar]
        if not cells.any():
            continue
        key = cells.tobytes()
        bars += 1
        repeats += key in seen
        seen.add(key)
    return repeats, bars


def bar_repeats(piece: Piece, farthest: int = 4) -> tuple[np.ndarray, int]:
    """(counts of whole, non-silent bars equal to the bar d = 1..`farthest` bars before them, the
    nearest such d counted; bars that have `farthest` whole bars before them): how the music
    repeats itself, bar by bar. Counts has length farthest + 1, index 0 unused."""
    bar, first = piece.steps_per_bar, (-piece.bar_phase) % piece.steps_per_bar
    rows = [piece.roll[s:s + bar] for s in range(first, piece.steps - bar + 1, bar)]
    counts, bars = np.zeros(farthest + 1, int), 0
    for i in range(farthest, len(rows)):
        if not rows[i].any():
            continue
        bars += 1
        back = next((d for d in range(1, farthest + 1) if np.array_equal(rows[i], rows[i - d])), 0)
        counts[back] += back > 0
    return counts, bars


def parallels(piece: Piece) -> tuple[int, int]:
    """(parallel fifths and octaves, chord changes), summed over the piece's steps (`step_parallels`)."""
    found, changes = 0, 0
    sounding = piece.roll > 0
    for t in range(1, len(sounding)):
        n = step_parallels(np.flatnonzero(sounding[t - 1]), np.flatnonzero(sounding[t]))
        if n is not None:
            found, changes = found + n, changes + 1
    return found, changes


def step_parallels(a: np.ndarray, b: np.ndarray) -> int | None:
    """Parallel fifths and octaves from chord `a` to chord `b` (ascending keys); None if no chord change.

    A chord is the set of keys sounding at a step; a chord change is a step whose chord differs
    from the previous step's, both of at least two keys. Voices are the chord's keys in pitch
    order: when both chords hold as many keys, every pair of voices is checked, otherwise only the
    outer pair (bass and top). A parallel is a pair a perfect fifth or octave apart (compound
    intervals included) in both chords, with both voices moving the same way.
    """
    if len(a) < 2 or len(b) < 2 or np.array_equal(a, b):
        return None
    found = 0
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))] if len(a) == len(b) else [(0, -1)]
    for i, j in pairs:
        before, after = a[j] - a[i], b[j] - b[i]
        moves = np.sign(b[i] - a[i]), np.sign(b[j] - a[j])
        if before % 12 in (0, 7) and before % 12 == after % 12 and moves[0] == moves[1] != 0:
            found += 1
    return found


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two histograms, each normalised; the shorter is padded with zeros."""
    n = max(len(p), len(q))
    p, q = (np.pad(np.asarray(h, float), (0, n - len(h))) for h in (p, q))
    if not p.sum() or not q.sum():
        return 1.0
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def _summed(histograms: list[np.ndarray]) -> np.ndarray:
    n = max((len(h) for h in histograms), default=0)
    return sum((np.pad(h, (0, n - len(h))) for h in histograms), np.zeros(n, int))


HISTOGRAMS = ("note_lengths", "polyphony", "onset_positions")


def style_of(pieces: list[Piece]) -> dict:
    """The measures pooled over pieces: shares pooled over notes (or bars), key confidence and pitch
    range averaged over pieces, histograms summed (as counts)."""
    in_key = np.array([notes_in_key(p) for p in pieces]).reshape(-1, 2).sum(axis=0)
    repeats = np.array([repeated_bars(p) for p in pieces]).reshape(-1, 2).sum(axis=0)
    par = np.array([parallels(p) for p in pieces]).reshape(-1, 2).sum(axis=0)
    confidence = [c for c in map(key_confidence, pieces) if c is not None]
    ranges = [r for r in map(pitch_range, pieces) if r is not None]
    lengths, poly = _summed([note_lengths(p) for p in pieces]), _summed([polyphony(p) for p in pieces])
    return {
        "pieces": len(pieces), "notes": int(in_key[1]),
        "notes_in_key": in_key[0] / in_key[1] if in_key[1] else float("nan"),
        "key_confidence": float(np.mean(confidence)) if confidence else float("nan"),
        "single_16th": lengths[0] / lengths.sum() if lengths.sum() else float("nan"),
        "repeated_bars": repeats[0] / repeats[1] if repeats[1] else float("nan"),
        "pitch_range": float(np.mean(ranges)) if ranges else float("nan"),
        "over_4_notes": poly[5:].sum() / poly.sum() if poly.sum() else float("nan"),
        "parallels_per_100": 100 * par[0] / par[1] if par[1] else float("nan"),
        "chord_changes": int(par[1]),
        "note_lengths": lengths, "polyphony": poly, "onset_positions": _summed([onset_positions(p) for p in pieces]),
    }


def style_goals(real: dict, ours: dict, baseline: dict) -> dict[str, tuple[bool, str]]:
    """Issue 21's goals, each (met, how far): shares within points of the real pieces', and every
    histogram at most half as far (total variation) from the real one as the baseline's."""
    goals = {}
    for name, points in (("notes_in_key", 5), ("repeated_bars", 15), ("single_16th", 10)):
        gap = abs(ours[name] - real[name]) * 100
        goals[f"{name} within {points} points"] = (bool(gap <= points), f"{gap:.1f} points off")
    for name in HISTOGRAMS:
        d_ours, d_base = total_variation(ours[name], real[name]), total_variation(baseline[name], real[name])
        goals[f"{name} TV <= half the baseline's"] = (d_ours <= d_base / 2, f"TV {d_ours:.3f} vs baseline {d_base:.3f}")
    return goals
