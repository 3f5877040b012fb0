"""The Bach chorales bundled with music21: the product's default corpus.

Chorales only: the four-part chorales music21 lists by Riemenschneider number (its Bach
folder also holds a keyboard prelude, bwv846, and chorale movements with instrumental parts),
one file each (.mxl before .krn), and a chorale whose notes repeat an earlier one's up to
transposition is skipped, so no held-out chorale is a training one in another key.

Parsing every score takes ~80 s cold, so each score is converted once into a small .npz
in the user cache directory ($ATELIER_CACHE_DIR, else $XDG_CACHE_HOME/atelier, else
~/.cache/atelier) and read from there afterwards.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from engine.music.piece import LOWEST, N_KEYS, ONSET, SOUNDING, Piece

CACHE_VERSION = "v1"
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")  # .rntxt files are harmonic analyses, not notes


def cache_dir() -> Path:
    base = os.environ.get("ATELIER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "atelier")
    return Path(base) / "bach" / CACHE_VERSION


def chorale_paths() -> list[Path]:
    """One score file per four-part chorale music21 ships (Riemenschneider's list), sorted."""
    from music21 import corpus  # imported late: music21 takes a second to import
    from music21.corpus import chorales

    listed = {name.split("/")[-1] for name in chorales.Iterator(returnType="filename")}
    by_name: dict[str, Path] = {}
    for path in sorted((Path(p) for p in corpus.getComposer("bach")), key=lambda p: SCORE_SUFFIXES.index(
            p.suffix.lower()) if p.suffix.lower() in SCORE_SUFFIXES else len(SCORE_SUFFIXES)):
        if path.suffix.lower() in SCORE_SUFFIXES and path.stem in listed:
            by_name.setdefault(path.stem, path)
    return sorted(by_name.values())


def _notes_fingerprint(roll: np.ndarray) -> bytes:
    """The sounding notes, moved down to the lowest key used: equal for a piece and its transpositions."""
    sounding = roll > 0
    keys = np.flatnonzero(sounding.any(axis=0))
    block = sounding[:, keys[0]:keys[-1] + 1] if len(keys) else sounding[:, :0]
    return np.packbits(block).tobytes() + repr(block.shape).encode()


def score_to_piece(path: Path, steps_per_quarter: int) -> Piece:
    """Parse one score with music21 and quantise every part onto one roll."""
    from music21 import converter, meter
    score = converter.parse(str(path))
    spans = []
    for part in score.parts:
        for n in part.stripTies().flatten().notes:
            s = int(round(float(n.offset) * steps_per_quarter))
            e = max(s + 1, int(round(float(n.offset + n.quarterLength) * steps_per_quarter)))
            spans += [(s, e, p.midi - LOWEST) for p in n.pitches if 0 <= p.midi - LOWEST < N_KEYS]
    if not spans:
        raise ValueError(f"{path.name} has no notes on the 88 keys")
    roll = np.zeros((max(e for _, e, _ in spans), N_KEYS), dtype=np.int8)
    for s, e, k in spans:
        roll[s:e, k] = SOUNDING
    for s, _, k in spans:
        roll[s, k] = ONSET
    ts = next(iter(score.recurse().getElementsByClass(meter.TimeSignature)), None)
    bar_quarters = float(ts.barDuration.quarterLength) if ts is not None else 4.0
    steps_per_bar = max(1, int(round(bar_quarters * steps_per_quarter)))
    measures = score.parts[0].getElementsByClass("Measure") if score.parts else []
    pickup = float(measures[0].paddingLeft) if len(measures) else 0.0  # a pickup bar starts late
    phase = int(round(pickup * steps_per_quarter)) % steps_per_bar
    return Piece(path.stem, roll, steps_per_quarter, steps_per_bar, phase, has_onsets=True)


def load_bach(steps_per_quarter: int = 4, limit: int | None = None,
              progress: Callable[[float, str], None] | None = None) -> tuple[list[Piece], list[tuple[str, str]]]:
    """Pieces of the music21 Bach corpus (cached), and (file, reason) for those skipped.

    `limit` takes only the first N scores (tests parse a few, not all). `progress(fraction,
    message)` hears after each score converted (not for those read from the cache), and may raise to stop.
    """
    paths = chorale_paths()[:limit]
    if not paths:
        raise FileNotFoundError("music21 ships no Bach scores here; reinstall music21 (pip install music21)")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    pieces, skipped = [], []
    seen: dict[bytes, str] = {}

    def keep(piece: Piece, name: str) -> None:
        first = seen.setdefault(_notes_fingerprint(piece.roll), piece.name)
        if first == piece.name:
            pieces.append(piece)
        else:
            skipped.append((name, f"repeats {first} (up to transposition)"))

    for i, path in enumerate(paths):
        cached = folder / f"{path.stem}-{steps_per_quarter}.npz"
        if progress and not cached.is_file():
            progress(i / len(paths), f"converting Bach chorale {i + 1} of {len(paths)} into the cache (once)")
        if cached.is_file():
            z = np.load(cached)
            if "error" in z:
                skipped.append((path.name, str(z["error"])))
                continue
            keep(Piece(path.stem, z["roll"], steps_per_quarter, int(z["steps_per_bar"]), int(z["bar_phase"]), True),
                 path.name)
            continue
        try:
            piece = score_to_piece(path, steps_per_quarter)
        except Exception as e:  # a score music21 cannot read is skipped, not fatal
            reason = f"cannot convert ({type(e).__name__}: {e})"
            np.savez(cached, error=np.array(reason))
            skipped.append((path.name, reason))
            continue
        tmp = cached.with_suffix(".tmp.npz")  # write then rename: a killed run leaves no half file
        np.savez_compressed(tmp, roll=piece.roll, steps_per_bar=piece.steps_per_bar, bar_phase=piece.bar_phase)
        tmp.replace(cached)
        keep(piece, path.name)
    return pieces, skipped
