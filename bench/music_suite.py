"""The music style suite's corpora: collections music21 ships offline, exported once to folders of MIDI
files that stand in for a musician's own (one file per piece, one track per part, with the piece's
time signatures, tempo when it has one, key signature, and a pickup bar starting where it does).

Each corpus is split by piece with a fixed seed into `train/` and `heldout/` under the cache folder
(default ~/.cache/atelier/music_suite/<corpus>/), with `manifest.json` listing what went where and
what was skipped. Pieces whose notes repeat an earlier piece's (up to transposition) are skipped, so no
held-out piece duplicates a training one.

    .venv/bin/python bench/music_suite.py                 # export every corpus (minutes, once)
    .venv/bin/python bench/music_suite.py essen --force   # export one again
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

CACHE = Path.home() / ".cache" / "atelier" / "music_suite"
HELDOUT_FRACTION = 0.15
SEED = 0
VERSION = 1  # bump when the export changes, so cached folders are rebuilt
TICKS = 480


@dataclass(frozen=True)
class Corpus:
    name: str
    about: str
    sources: tuple[str, ...]  # music21 corpus paths, or a folder of them ("palestrina/"); an .abc file holds many tunes
    part_writing: bool        # voices that move against each other: parallels are counted
    limit: int | None = None  # a seeded sample of this many files from a folder


CORPORA = {c.name: c for c in (
    Corpus("essen", "German folk songs (Essen collection, Erk), one melody; 4/4, 3/4, 2/4, 6/8, 3/8",
           ("essenFolksong/erk20.abc",), part_writing=False),
    Corpus("oneills", "Irish dance tunes (O'Neill's 1850): jigs in 6/8, reels, hornpipes, slip jigs, airs",
           ("oneills1850/0001-0050.abc", "oneills1850/0051-0100.abc", "oneills1850/0101-0200.abc",
            "oneills1850/0201-0300.abc"), part_writing=False),
    Corpus("palestrina", "Palestrina's mass movements, 4 to 6 voices of Renaissance counterpoint, mostly 4/2",
           ("palestrina/",), part_writing=True, limit=120),
)}

_MAJOR = {-7: "Cb", -6: "Gb", -5: "Db", -4: "Ab", -3: "Eb", -2: "Bb", -1: "F", 0: "C", 1: "G", 2: "D", 3: "A",
          4: "E", 5: "B", 6: "F#", 7: "C#"}
_MINOR = {-7: "Abm", -6: "Ebm", -5: "Bbm", -4: "Fm", -3: "Cm", -2: "Gm", -1: "Dm", 0: "Am", 1: "Em", 2: "Bm",
          3: "F#m", 4: "C#m", 5: "G#m", 6: "D#m", 7: "A#m"}


def _paths(corpus: Corpus) -> list[str]:
    from music21 import corpus as m21

    every = sorted(str(p) for p in m21.getCorePaths())
    paths = []
    for source in corpus.sources:
        if source.endswith("/"):
            found = [p for p in every if f"/{source}" in p]
            if corpus.limit is not None and len(found) > corpus.limit:
                pick = np.random.default_rng(SEED).choice(len(found), corpus.limit, replace=False)
                found = [found[i] for i in sorted(pick)]
            paths += found
        else:
            paths += [p for p in every if p.endswith("/" + source)]
    return paths


def _scores(path: str):
    """(label, score) of each piece in one corpus file."""
    from music21 import converter, stream

    parsed = converter.parse(path)
    stem = Path(path).stem
    if isinstance(parsed, stream.Opus):
        for i, score in enumerate(parsed.scores):
            number = score.metadata.number if score.metadata and score.metadata.number else i + 1
            yield f"{stem}-{number}", score
    else:
        yield stem, parsed


def _meters(part) -> list[tuple[float, int, int]]:
    """(offset, numerator, denominator) of each time signature; of several at one offset, the last.
    music21's ABC reader also turns a unit note length (L: 1/16) into a time signature: 1/x ones are dropped."""
    from music21 import meter

    found = {}
    for ts in part.flatten().getElementsByClass(meter.TimeSignature):
        if ts.numerator > 1:
            found[float(ts.offset)] = (ts.numerator, ts.denominator)
    return [(off, *m) for off, m in sorted(found.items())]


def _pickup(part) -> float:
    """Quarter notes missing from a first bar that is shorter than its time signature (an anacrusis)."""
    measures = part.getElementsByClass("Measure")
    if not measures:
        return 0.0
    first = measures[0]
    if first.paddingLeft:
        return float(first.paddingLeft)
    bar, length = float(first.barDuration.quarterLength), float(first.duration.quarterLength)
    return bar - length if 0 < length < bar else 0.0


def score_to_midi(score) -> tuple[mido.MidiFile, dict]:
    """A type-1 MIDI file of a music21 score (a conductor track, then one track per part) and what
    it holds (meter, key, bpm, parts, notes, and a transposition-free fingerprint of its notes)."""
    from music21 import key as m21key
    from music21 import tempo

    parts = list(score.parts) or [score]
    shift = _pickup(parts[0])
    ticks = lambda quarters: int(round((quarters + shift) * TICKS))  # noqa: E731
    meters = _meters(parts[0])
    signature = next(iter(score.flatten().getElementsByClass(m21key.KeySignature)), None)
    marks = list(score.flatten().getElementsByClass(tempo.MetronomeMark))
    bpm = marks[0].getQuarterBPM() if marks and marks[0].number else None
    conductor = [(0 if off == 0 else ticks(off), mido.MetaMessage("time_signature", numerator=n, denominator=d))
                 for off, n, d in meters if d in (1, 2, 4, 8, 16, 32)]
    key = None
    if signature is not None and -7 <= signature.sharps <= 7:
        key = (_MINOR if getattr(signature, "mode", None) == "minor" else _MAJOR)[signature.sharps]
        conductor.append((0, mido.MetaMessage("key_signature", key=key)))
    if bpm:
        conductor.append((0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    tracks, fingerprint = [_track(sorted(conductor, key=lambda e: e[0]))], []
    channels = [c for c in range(16) if c != 9]
    for index, part in enumerate(parts):
        events = []
        for element in part.flatten().stripTies().notes:
            length = float(element.quarterLength)
            if length <= 0:  # grace notes
                continue
            for pitch in element.pitches:
                if 0 <= pitch.midi <= 127:
                    start, end = ticks(float(element.offset)), ticks(float(element.offset) + length)
                    events += [(start, 1, pitch.midi), (max(end, start + 1), 0, pitch.midi)]
                    fingerprint.append((index, float(element.offset), length, pitch.midi))
        channel = channels[index % len(channels)]
        tracks.append(_track([(t, mido.Message("note_on" if on else "note_off", note=p, velocity=80 if on else 0,
                                               channel=channel)) for t, on, p in sorted(events)]))
    low = min((f[3] for f in fingerprint), default=0)
    info = {"meter": f"{meters[0][1]}/{meters[0][2]}" if meters else None, "key": key, "bpm": bpm,
            "parts": len(parts), "notes": len(fingerprint), "pickup_quarters": shift,
            "fingerprint": hash(tuple((i, o, d, p - low) for i, o, d, p in sorted(fingerprint)))}
    return mido.MidiFile(type=1, ticks_per_beat=TICKS, tracks=tracks), info


def _track(events: list[tuple[int, mido.Message]]) -> mido.MidiTrack:
    track, now = mido.MidiTrack(), 0
    for tick, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def export(corpus: Corpus, cache: Path = CACHE, force: bool = False, log=print) -> Path:
    """The corpus's folder (`train/`, `heldout/`, `manifest.json`), exported unless already cached."""
    root = cache / corpus.name
    manifest = root / "manifest.json"
    if manifest.is_file() and not force and json.loads(manifest.read_text()).get("version") == VERSION:
        return root
    pieces, skipped, seen = [], [], set()
    paths = _paths(corpus)
    for n, path in enumerate(paths):
        log(f"[{corpus.name}] reading {Path(path).name} ({n + 1}/{len(paths)})")
        try:
            scores = list(_scores(path))
        except Exception as e:  # music21 raises many kinds on files it cannot read
            skipped.append({"file": path, "reason": f"{type(e).__name__}: {e}"})
            continue
        for label, score in scores:
            try:
                midi, info = score_to_midi(score)
            except Exception as e:
                skipped.append({"file": label, "reason": f"{type(e).__name__}: {e}"})
                continue
            if not info["notes"]:
                skipped.append({"file": label, "reason": "no notes"})
            elif info["fingerprint"] in seen:
                skipped.append({"file": label, "reason": "the same notes as an earlier piece (up to transposition)"})
            else:
                seen.add(info.pop("fingerprint"))
                pieces.append((re.sub(r"[^A-Za-z0-9_.-]+", "_", label), midi, info))
    if len(pieces) < 2:
        raise RuntimeError(f"{corpus.name}: only {len(pieces)} pieces exported; skipped: {skipped[:5]}")
    order = np.random.default_rng(SEED).permutation(len(pieces))
    heldout = set(order[:max(1, int(round(len(pieces) * HELDOUT_FRACTION)))].tolist())
    listing = []
    for split in ("train", "heldout"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for old in (root / split).glob("*.mid"):
            old.unlink()
    for i, (name, midi, info) in enumerate(pieces):
        split = "heldout" if i in heldout else "train"
        file = f"{i:04d}-{name}.mid"
        midi.save(root / split / file)
        listing.append({"file": f"{split}/{file}", **info})
    manifest.write_text(json.dumps({"version": VERSION, "corpus": corpus.name, "about": corpus.about,
                                    "part_writing": corpus.part_writing, "seed": SEED,
                                    "heldout_fraction": HELDOUT_FRACTION, "train": len(pieces) - len(heldout),
                                    "heldout": len(heldout), "pieces": listing, "skipped": skipped}, indent=1))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpora", nargs="*", help=f"some of {', '.join(CORPORA)} (default: all)")
    ap.add_argument("--cache-dir", type=Path, default=CACHE)
    ap.add_argument("--force", action="store_true", help="export again even if cached")
    args = ap.parse_args()
    unknown = set(args.corpora) - set(CORPORA)
    if unknown:
        ap.error(f"unknown corpora {sorted(unknown)}; the suite has {', '.join(CORPORA)}")
    for name in args.corpora or list(CORPORA):
        root = export(CORPORA[name], args.cache_dir, args.force)
        m = json.loads((root / "manifest.json").read_text())
        print(f"{name}: {m['train']} train, {m['heldout']} held out, {len(m['skipped'])} skipped -> {root}")


if __name__ == "__main__":
    main()
