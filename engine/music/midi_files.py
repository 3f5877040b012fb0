"""The user's MIDI files, read with mido, cleaned and quantised into Pieces.

Cleaning: a file that cannot be parsed or holds no usable notes is skipped with the
reason; inside a file, tracks without notes, the drum channel (MIDI channel 10, index 9,
unless keep_drums) and notes outside the 88 keys are dropped and counted. Nothing here
raises on a bad file when loading a folder: the report says what happened.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from engine.music.piece import LOWEST, N_KEYS, ONSET, SOUNDING, Piece

DRUM_CHANNEL = 9
MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")


class MidiSkip(Exception):
    """A file that cannot become a Piece; the message says why."""


@dataclass
class MidiReport:
    used: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> {what: count}

    def summary(self) -> dict:
        totals: dict[str, int] = {}
        for counts in self.dropped.values():
            for what, n in counts.items():
                totals[what] = totals.get(what, 0) + n
        return {"files_used": len(self.used), "files_skipped": [{"file": f, "reason": r} for f, r in self.skipped],
                "dropped": totals}


def _track_notes(track: mido.MidiTrack) -> list[tuple[int, int, int, int]]:
    """(start tick, end tick, channel, pitch) of every note in one track."""
    tick, open_notes, notes = 0, {}, []
    for msg in track:
        tick += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            open_notes.setdefault((msg.channel, msg.note), []).append(tick)
        elif msg.type in ("note_off", "note_on"):
            starts = open_notes.get((msg.channel, msg.note))
            if starts:
                notes.append((starts.pop(0), tick, msg.channel, msg.note))
    for (ch, pitch), starts in open_notes.items():  # never released: end with the track
        notes += [(s, max(tick, s + 1), ch, pitch) for s in starts]
    return notes


def _meter(mid: mido.MidiFile) -> tuple[int, int]:
    for track in mid.tracks:
        for msg in track:
            if msg.type == "time_signature":
                return msg.numerator, msg.denominator
    return 4, 4


def piece_from_midi(mid: mido.MidiFile, name: str, steps_per_quarter: int = 4, keep_drums: bool = False,
                    dropped: dict[str, int] | None = None) -> Piece:
    """Quantise a parsed MIDI file to `steps_per_quarter` steps per quarter note.

    Raises MidiSkip when nothing usable is left. `dropped` (if given) receives counts.
    """
    dropped = {} if dropped is None else dropped
    if mid.type == 2:
        raise MidiSkip("type 2 (asynchronous tracks) MIDI files are not supported; export as type 0 or 1")
    if mid.ticks_per_beat <= 0:
        raise MidiSkip(f"invalid ticks per beat {mid.ticks_per_beat}")
    notes = []
    for track in mid.tracks:
        found = _track_notes(track)
        if not found:
            dropped["empty tracks"] = dropped.get("empty tracks", 0) + 1
        for n in found:
            if n[2] == DRUM_CHANNEL and not keep_drums:
                dropped["drum notes"] = dropped.get("drum notes", 0) + 1
            elif not LOWEST <= n[3] < LOWEST + N_KEYS:
                dropped["notes outside 88 keys"] = dropped.get("notes outside 88 keys", 0) + 1
            else:
                notes.append(n)
    if not notes:
        raise MidiSkip("no notes left after dropping empty tracks, drums and out-of-range notes")
    step_ticks = mid.ticks_per_beat / steps_per_quarter
    spans = [(int(round(s / step_ticks)), int(round(e / step_ticks)), p - LOWEST) for s, e, _, p in notes]
    first = min(s for s, _, _ in spans)  # leading silence is dropped
    length = max(max(s + 1, e) for s, e, _ in spans) - first
    roll = np.zeros((length, N_KEYS), dtype=np.int8)
    for s, e, k in sorted(spans):
        roll[s - first:max(s + 1, e) - first, k] = SOUNDING
    for s, _, k in spans:  # onsets after sustains, so a repeated note re-attacks
        roll[s - first, k] = ONSET
    num, den = _meter(mid)
    steps_per_bar = max(1, int(round(num * 4 / den * steps_per_quarter)))
    return Piece(name, roll, steps_per_quarter, steps_per_bar, bar_phase=first % steps_per_bar, has_onsets=True)


def read_midi(source: str | Path | bytes, steps_per_quarter: int = 4, keep_drums: bool = False,
              dropped: dict[str, int] | None = None) -> Piece:
    """One MIDI file (path or raw bytes) as a Piece; raises MidiSkip with the reason if unusable."""
    name = "clip" if isinstance(source, bytes) else Path(source).name
    try:
        mid = mido.MidiFile(file=io.BytesIO(source)) if isinstance(source, bytes) else mido.MidiFile(source)
    except Exception as e:  # mido raises OSError, EOFError, ValueError, KeyError... on damaged files
        raise MidiSkip(f"cannot parse as MIDI ({type(e).__name__}: {e})") from e
    return piece_from_midi(mid, name, steps_per_quarter, keep_drums, dropped)


def load_midi_folder(folder: str | Path, steps_per_quarter: int = 4, keep_drums: bool = False,
                     ) -> tuple[list[Piece], MidiReport]:
    """Every MIDI file under `folder` (recursively), plus a report of what was skipped and why."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"MIDI folder {root} does not exist; pass a folder of .mid files")
    pieces, report = [], MidiReport()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file()):
        rel = str(path.relative_to(root))
        dropped: dict[str, int] = {}
        try:
            piece = read_midi(path, steps_per_quarter, keep_drums, dropped)
        except MidiSkip as e:
            report.skipped.append((rel, str(e)))
            continue
        finally:
            if dropped:
                report.dropped[rel] = dropped
        piece.name = rel
        pieces.append(piece)
        report.used.append(rel)
    if not pieces:
        raise FileNotFoundError(f"no usable MIDI files under {root} (skipped: {report.skipped or 'none found'})")
    return pieces, report
