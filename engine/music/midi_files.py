"""The user's MIDI files, read with mido, cleaned and quantised into Pieces.

Cleaning: a file that cannot be parsed or holds no usable notes is skipped with the
reason; inside a file, tracks without notes, the drum channel (MIDI channel 10, index 9,
unless keep_drums) and notes outside the 88 keys are dropped and counted. Nothing here
raises on a bad file when loading a folder: the report says what happened.

Size is checked from the parsed notes' ticks before any roll is allocated: a 37-byte file can
hold one note lasting millions of beats, which as a roll would take gigabytes. A piece longer
than `max_steps` or with a note longer than MAX_NOTE_QUARTERS is refused with the reason, and
a file over MAX_FILE_BYTES is not parsed at all.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from engine.music.keys import bar_steps
from engine.music.piece import LOWEST, N_KEYS, ONSET, SOUNDING, Piece

DRUM_CHANNEL = 9
MAX_PIECE_STEPS = 1 << 16   # 4096 bars of 4/4 at 16ths; its roll takes 5.8 MB
MAX_NOTE_QUARTERS = 512     # 128 bars of 4/4: longer is a lost or misplaced note-off, not music
MAX_FILE_BYTES = 4 << 20    # mido holds ~140 bytes per byte of file: a dense 4 MB file parses into ~0.6 GB
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


def _first(mid: mido.MidiFile, kind: str) -> mido.MetaMessage | None:
    """The earliest meta message of a kind (by tick, over all tracks)."""
    found = []
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == kind:
                found.append((tick, msg))
                break
    return min(found, key=lambda f: f[0])[1] if found else None


def _style(mid: mido.MidiFile) -> dict:
    """The piece's first time signature, tempo and key signature (MIDI's defaults: 4/4, 120 BPM, none)."""
    meter, tempo, key = _first(mid, "time_signature"), _first(mid, "set_tempo"), _first(mid, "key_signature")
    return {"meter": (meter.numerator, meter.denominator) if meter else (4, 4),
            "bpm": round(mido.tempo2bpm(tempo.tempo), 3) if tempo and tempo.tempo > 0 else 120.0,
            "key": key.key if key else None}


def _check_size(notes: list[tuple[int, int, int, int]], ticks_per_beat: int, steps_per_quarter: int,
                max_steps: int) -> None:
    """MidiSkip if a note or the whole piece is too long; from the ticks alone, before any roll exists."""
    s, e, _, pitch = max(notes, key=lambda n: n[1] - n[0])
    if e - s > MAX_NOTE_QUARTERS * ticks_per_beat:
        raise MidiSkip(f"a note (pitch {pitch}, starting at beat {s / ticks_per_beat:,.0f}) lasts "
                       f"{(e - s) / ticks_per_beat:,.0f} beats; notes over {MAX_NOTE_QUARTERS} beats are taken as "
                       "a damaged file (a lost or misplaced note-off): fix or re-export it")
    first, last = min(n[0] for n in notes), max(n[1] for n in notes)
    steps = (last - first) * steps_per_quarter / ticks_per_beat
    if steps > max_steps:
        raise MidiSkip(f"the piece is {steps:,.0f} steps ({(last - first) / ticks_per_beat:,.0f} beats) long; "
                       f"at most {max_steps:,} steps ({max_steps // steps_per_quarter:,} beats) are read: "
                       "split it into shorter files")


def piece_from_midi(mid: mido.MidiFile, name: str, steps_per_quarter: int = 4, keep_drums: bool = False,
                    dropped: dict[str, int] | None = None, max_steps: int = MAX_PIECE_STEPS) -> Piece:
    """Quantise a parsed MIDI file to `steps_per_quarter` steps per quarter note.

    Raises MidiSkip when nothing usable is left, or when the piece is longer than `max_steps`
    or holds a note over MAX_NOTE_QUARTERS (checked before the roll is built). `dropped`
    (if given) receives counts.
    """
    dropped = {} if dropped is None else dropped
    if mid.type == 2:
        raise MidiSkip("type 2 (asynchronous tracks) MIDI files are not supported; export as type 0 or 1")
    if mid.ticks_per_beat <= 0:
        raise MidiSkip(f"invalid ticks per beat {mid.ticks_per_beat}")
    notes = []
    for track in mid.tracks:
        found = _track_notes(track)  # a track without notes (a tempo map, a name) holds nothing to drop
        for n in found:
            if n[2] == DRUM_CHANNEL and not keep_drums:
                dropped["drum notes"] = dropped.get("drum notes", 0) + 1
            elif not LOWEST <= n[3] < LOWEST + N_KEYS:
                dropped["notes outside 88 keys"] = dropped.get("notes outside 88 keys", 0) + 1
            else:
                notes.append(n)
    if not notes:
        raise MidiSkip("no notes left after dropping drums and out-of-range notes")
    _check_size(notes, mid.ticks_per_beat, steps_per_quarter, max_steps)
    step_ticks = mid.ticks_per_beat / steps_per_quarter
    spans = [(int(round(s / step_ticks)), int(round(e / step_ticks)), p - LOWEST) for s, e, _, p in notes]
    first = min(s for s, _, _ in spans)  # leading silence is dropped
    length = max(max(s + 1, e) for s, e, _ in spans) - first
    roll = np.zeros((length, N_KEYS), dtype=np.int8)
    for s, e, k in sorted(spans):
        roll[s - first:max(s + 1, e) - first, k] = SOUNDING
    for s, _, k in spans:  # onsets after sustains, so a repeated note re-attacks
        roll[s - first, k] = ONSET
    style = _style(mid)
    steps_per_bar = bar_steps(style["meter"], steps_per_quarter)
    return Piece(name, roll, steps_per_quarter, steps_per_bar, bar_phase=first % steps_per_bar, has_onsets=True,
                 **style)


def read_midi(source: str | Path | bytes, steps_per_quarter: int = 4, keep_drums: bool = False,
              dropped: dict[str, int] | None = None, max_steps: int = MAX_PIECE_STEPS) -> Piece:
    """One MIDI file (path or raw bytes) as a Piece; raises MidiSkip with the reason if unusable
    (also when longer than `max_steps`)."""
    name = "clip" if isinstance(source, bytes) else Path(source).name
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    if size > MAX_FILE_BYTES:
        raise MidiSkip(f"the file is {size / 2**20:.1f} MB; MIDI files over {MAX_FILE_BYTES >> 20} MB are not read "
                       "(parsing takes ~140x its size in memory): split it into shorter files")
    try:
        mid = mido.MidiFile(file=io.BytesIO(source)) if isinstance(source, bytes) else mido.MidiFile(source)
    except Exception as e:  # mido raises OSError, EOFError, ValueError, KeyError... on damaged files
        raise MidiSkip(f"cannot parse as MIDI ({type(e).__name__}: {e})") from e
    return piece_from_midi(mid, name, steps_per_quarter, keep_drums, dropped, max_steps)


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
