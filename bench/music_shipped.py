"""Does the shipped chorale model voice-lead like its corpus? (`bench/music_bench.py --shipped`)

Generates --seeds pieces of --bars bars from a model file through a real engine's `music.generate`
(its defaults; each --controls adds a column with those controls set, e.g. max_polyphony=88 for no
voice limit, or temperature=0.9,top_p=0.95) and scores them with engine.music.style beside the held-out Bach chorales (the
model's own split of the corpus), cut into windows as long (a shorter chorale is scored whole): parallel fifths/octaves per 100 chord
changes, share of steps with more than 4 notes, the polyphony histogram and its distance to the real
one, notes in key.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine.music.bach import load_bach
from engine.music.config import stored_config
from engine.music.generation import avoids_parallels
from engine.music.piece import split_by_file
from engine.music.style import style_of, total_variation
from engine.store.checkpoints import load_file
from music_style import generate_ours, windows

NAME = "shipped-under-test"


def _row(label: str, values: list[str]) -> str:
    return f"{label:34s}" + "".join(f"{v:>{max(14, len(v) + 2)}s}" for v in values)


def parse_controls(text: str) -> dict:
    """'max_polyphony=88,top_p=0.95' as {"max_polyphony": 88, "top_p": 0.95}."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def table(columns: dict[str, dict]) -> str:
    real = columns["real held-out"]
    rows = [_row("", list(columns)),
            _row("pieces / chord changes", [f"{s['pieces']} / {s['chord_changes']}" for s in columns.values()]),
            _row("notes in key %", [f"{100 * s['notes_in_key']:.1f}" for s in columns.values()]),
            _row("parallel 5ths/8ves per 100 changes", [f"{s['parallels_per_100']:.2f}" for s in columns.values()]),
            _row("steps with > 4 notes %", [f"{100 * s['over_4_notes']:.1f}" for s in columns.values()]),
            _row("polyphony TV to real", [f"{total_variation(s['polyphony'], real['polyphony']):.3f}"
                                          for s in columns.values()]),
            _row("note lengths TV to real", [f"{total_variation(s['note_lengths'], real['note_lengths']):.3f}"
                                             for s in columns.values()]),
            _row("single-16th notes %", [f"{100 * s['single_16th']:.1f}" for s in columns.values()])]
    for n in range(9):
        rows.append(_row(f"  {n}{'+' if n == 8 else ''} keys sounding %",
                         [f"{100 * s['polyphony'][n] / s['polyphony'].sum():.1f}" for s in columns.values()]))
    return "\n".join(rows)


def run_shipped(args: argparse.Namespace) -> dict:
    weights = Path(args.shipped)
    metadata, _ = load_file(weights)
    cfg = stored_config(metadata["config"])
    controls = {"defaults": {}, **{c: parse_controls(c) for c in args.controls or []}}
    with tempfile.TemporaryDirectory(prefix="music-shipped-") as models:
        shutil.copy(weights, Path(models) / f"{NAME}.safetensors")
        generated = {label: generate_ours(Path(models), NAME, args.seeds, {"bars": args.bars, **c},
                                              args.first_seed)
                     for label, c in controls.items()}
    steps = next(iter(generated.values()))[0].steps
    pieces, _ = load_bach(cfg.steps_per_quarter)
    _, heldout = split_by_file(pieces, cfg.valid_fraction, cfg.seed)
    real = windows(heldout, steps)  # most chorales are shorter than 16 bars: those are scored whole
    columns = {"real held-out": style_of(real), **{k: style_of(v) for k, v in generated.items()}}
    data = metadata.get("data") or {}
    print(f"{weights} ({data.get('train_pieces', '?')} training pieces, step {metadata.get('step')}, "
          f"held-out NLL {metadata.get('metrics', {}).get('nll', float('nan')):.3f}, voices "
          f"{data.get('voices', 'not recorded')}, training music's parallels per 100 chord changes "
          f"{data.get('parallels_per_100', 'not recorded')}: no_parallels by default "
          f"{'on' if avoids_parallels(metadata) else 'off'}): {args.seeds} seeds (from {args.first_seed}) x {args.bars:g} bars through music.generate; "
          f"real: {len(heldout)} held-out chorales in {len(real)} windows of up to {steps} steps")
    print(table(columns))
    return {k: {m: (v.tolist() if isinstance(v, np.ndarray) else v) for m, v in s.items()} for k, s in columns.items()}
