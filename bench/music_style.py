"""The music style suite (`bench/music_bench.py --suite`): does a model trained on a musician's folder
play in that folder's style?

For each corpus of bench/music_suite.py (exported MIDI files, split by piece into train/ and heldout/):

1. ours: the plain `atelier train music --midi train/ --name N` (a subprocess; `--minutes M` only when
   the bench is given --minutes, to shorten runs while developing);
2. the baseline: the independent-Bernoulli LSTM (engine/music/baseline.py) on the same folder, the same
   windows and the same trainer budget (engine.music.ops.TRAIN_DEFAULTS, or --minutes);
3. --seeds pieces from each: ours through a real engine's `music.generate` op with its defaults and only
   the seed and the meter set (the meters asked in the held-out pieces' proportions: the onset and
   repeated-bar measures are per bar); the baseline sampled key by key from its Bernoulli outputs,
   as long as ours, with the same bars;
4. the held-out pieces, cut at bar lines into windows as long as a generated piece (whole bars);
5. engine.music.style's measures of all three, printed as a table per corpus with issue 21's goals.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.cli.demo import start_engine
from engine.client import Client
from engine.music.evaluation import frame_nll
from engine.music.midi_files import load_midi_folder
from engine.music.objective import MusicObjective
from engine.music.ops import TRAIN_DEFAULTS
from engine.music.piece import Piece
from engine.music.style import HISTOGRAMS, LENGTH_LABELS, style_goals, style_of, total_variation
from engine.paths import read_token
from engine.store.checkpoints import ModelStore
from engine.train.config import TrainConfig
from engine.train.trainer import TrainRun, train
from music_suite import CACHE, CORPORA, export


class BaselineObjective(MusicObjective):
    """The independent-Bernoulli baseline alone, on the windows MusicObjective draws from the folder."""

    def __init__(self, midi: Path):
        super().__init__({"baseline": {}}, midi=midi)
        self.nets = {"baseline": self.nets["baseline"]}
        self.export_nets = ("baseline",)

    def evaluate(self) -> dict[str, float]:
        return {"valid_baseline_nll": frame_nll(self.nets["baseline"], self.valid_pieces)["nll"]} \
            if self.valid_pieces else {}

    def preview(self) -> None:
        return None


def train_ours(folder: Path, name: str, env: dict, minutes: float) -> float:
    """The plain default command; its minutes."""
    command = [sys.executable, "-m", "engine", "train", "music", "--midi", str(folder), "--name", name]
    command += ["--minutes", f"{minutes:g}"] if minutes else []
    print("$", " ".join(command[1:]), flush=True)
    t = time.time()
    subprocess.run(command, env=env, check=True)
    return (time.time() - t) / 60


def train_baseline(folder: Path, name: str, models: Path, minutes: float) -> torch.nn.Module:
    objective = BaselineObjective(folder)
    # the kind's defaults, keeping the baseline's best held-out point as ours keeps its own
    cfg = TrainConfig(**{**TRAIN_DEFAULTS, "keep_best": "valid_baseline_nll", **({"minutes": minutes} if minutes else {})})
    run = TrainRun(ModelStore(models, builtin=None), name, "music", torch.device("cpu"))
    train(objective, cfg, run)
    return objective.nets["baseline"].eval()


@torch.no_grad()
def sample_baseline(net: torch.nn.Module, steps: int, seed: int) -> np.ndarray:
    """A (steps, 88) roll of 0/1, each key drawn from its own Bernoulli given the previous step."""
    generator = torch.Generator().manual_seed(seed)
    prev, state, rows = torch.zeros(1, 1, 88), None, []
    for _ in range(steps):
        logits, state = net(prev, state)
        prev = torch.bernoulli(torch.sigmoid(logits), generator=generator)
        rows.append(prev[0, 0])
    return torch.stack(rows).numpy().astype(np.int8)


def generate_ours(models: Path, name: str, seeds: int, params: dict | None = None, first: int = 0,
                  meters: list[str] | None = None) -> list[Piece]:
    """`seeds` pieces from the music.generate op of a real engine, its defaults and only the seed
    (and `params`; piece i in `meters[i]` if given) set."""
    with tempfile.TemporaryDirectory(prefix="music-style-") as state:
        process, ready = start_engine("cpu", Path(state), {"ATELIER_MODELS_DIR": str(models)})
        try:
            with Client(ready["host"], ready["port"], token=read_token(Path(ready["token_file"])),
                        name="music-style-bench") as client:
                values = [client.call("music.generate", {"model": name, "seed": s, **(params or {}),
                                                         **({"meter": meters[i]} if meters else {})}, timeout=600)
                          for i, s in enumerate(range(first, first + seeds))]
        finally:
            process.terminate()
            process.wait(timeout=60)
    return [Piece(f"{name}-{i}", np.asarray(v["roll"], np.int8), int(v["steps_per_quarter"]), int(v["steps_per_bar"]))
            for i, v in enumerate(values)]


def meters_like(heldout: list[str], count: int) -> list[str]:
    """`count` meters in the held-out pieces' proportions (largest remainders; the commonest first),
    so that each generated piece is asked for a meter the real music has, as a user would ask."""
    shares = Counter(heldout).most_common()
    quotas = [(m, n * count / len(heldout)) for m, n in shares]
    counts = {m: math.floor(q) for m, q in quotas}
    for m, q in sorted(quotas, key=lambda mq: mq[1] - math.floor(mq[1]), reverse=True)[:count - sum(counts.values())]:
        counts[m] += 1
    return [m for m, _ in shares for _ in range(counts[m])]


def windows(pieces: list[Piece], steps: int = 0, bars: int = 0) -> list[Piece]:
    """Each piece cut at its bar lines into windows of `bars` bars, or of the whole bars nearest
    `steps` (a piece shorter than one window is kept whole, from its first bar line)."""
    out = []
    for p in pieces:
        bar = p.steps_per_bar
        length = (bars or max(1, round(steps / bar))) * bar
        first = (-p.bar_phase) % bar
        starts = list(range(first, p.steps - length + 1, length)) or [first]
        out += [replace(p, roll=p.roll[s:s + length], bar_phase=0) for s in starts]
    return out


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def table(corpus, real: dict, ours: dict, base: dict) -> str:
    rows = [("pieces scored", *(str(s["pieces"]) for s in (real, ours, base))),
            ("notes", *(str(s["notes"]) for s in (real, ours, base))),
            ("notes in key %", *(_pct(s["notes_in_key"]) for s in (real, ours, base))),
            ("key confidence (K-K r)", *(f"{s['key_confidence']:.2f}" for s in (real, ours, base))),
            ("single-16th notes %", *(_pct(s["single_16th"]) for s in (real, ours, base))),
            ("repeated bars %", *(_pct(s["repeated_bars"]) for s in (real, ours, base))),
            ("pitch range (semitones)", *(f"{s['pitch_range']:.1f}" for s in (real, ours, base))),
            ("steps with > 4 notes %", *(_pct(s["over_4_notes"]) for s in (real, ours, base)))]
    if corpus.part_writing:
        rows.append(("parallel 5ths/8ves per 100 changes",
                     *(f"{s['parallels_per_100']:.1f}" for s in (real, ours, base))))
    for h in HISTOGRAMS:
        rows.append((f"{h} TV to real", "0", *(f"{total_variation(s[h], real[h]):.3f}" for s in (ours, base))))
    lengths = [s["note_lengths"] / max(1, s["note_lengths"].sum()) for s in (real, ours, base)]
    rows += [(f"  length {label} %", *(f"{100 * h[i]:.1f}" for h in lengths)) for i, label in enumerate(LENGTH_LABELS)]
    poly = [s["polyphony"] / max(1, s["polyphony"].sum()) for s in (real, ours, base)]
    rows += [(f"  {n}{'+' if n == 8 else ''} keys sounding %", *(f"{100 * h[n]:.1f}" for h in poly)) for n in range(9)]
    lines = [f"{'':36s}{'real held-out':>15s}{'ours':>10s}{'baseline':>10s}"]
    lines += [f"{r[0]:36s}{r[1]:>15s}{r[2]:>10s}{r[3]:>10s}" for r in rows]
    return "\n".join(lines)


def run_corpus(corpus, args: argparse.Namespace, models: Path) -> dict:
    root = export(corpus, args.cache_dir or CACHE)
    manifest = json.loads((root / "manifest.json").read_text())
    meters = Counter(p["meter"] for p in manifest["pieces"]).most_common(4)
    print(f"\n== {corpus.name}: {corpus.about}\n   {manifest['train']} pieces to train on, {manifest['heldout']} held "
          f"out (seed {manifest['seed']}), {len(manifest['skipped'])} skipped; meters "
          f"{', '.join(f'{m} {n}' for m, n in meters)}; {root}", flush=True)
    name, store = f"suite-{corpus.name}", ModelStore(models, builtin=None)
    env = {**os.environ, "ATELIER_MODELS_DIR": str(models)}
    minutes = None
    if not (args.reuse and store.path(name).is_file()):
        minutes = train_ours(root / "train", name, env, args.minutes)
    t = time.time()
    baseline_minutes = args.minutes if args.baseline_minutes is None else args.baseline_minutes
    baseline = train_baseline(root / "train", f"{name}-baseline", models, baseline_minutes)
    baseline_minutes = (time.time() - t) / 60
    asked = meters_like([p["meter"] or "4/4" for p in manifest["pieces"] if p["file"].startswith("heldout/")],
                        args.seeds)
    ours = generate_ours(models, name, args.seeds, meters=asked)
    bars = ours[0].steps // ours[0].steps_per_bar
    base = [Piece(f"baseline-{s}", sample_baseline(baseline, ours[s].steps, s), ours[s].steps_per_quarter,
                  ours[s].steps_per_bar) for s in range(args.seeds)]
    heldout, _ = load_midi_folder(root / "heldout", ours[0].steps_per_quarter)
    real = windows(heldout, bars=bars)
    scores = {who: style_of(pieces) for who, pieces in (("real", real), ("ours", ours), ("baseline", base))}
    goals = style_goals(scores["real"], scores["ours"], scores["baseline"])
    print(f"\n{corpus.name}: {len(heldout)} held-out pieces in {len(real)} windows of {bars} bars; {args.seeds} "
          f"generated pieces of {bars} bars (meters asked as the held-out pieces': "
          f"{', '.join(f'{m} x{n}' for m, n in Counter(asked).items())}) "
          f"from each model; ours trained {minutes and round(minutes, 1)} min"
          f"{' (--minutes %g)' % args.minutes if args.minutes else ' (default budget)'}, baseline "
          f"{baseline_minutes:.1f} min")
    print(table(corpus, scores["real"], scores["ours"], scores["baseline"]))
    for goal, (met, how) in goals.items():
        print(f"  {'PASS' if met else 'FAIL'}  {goal}: {how}")
    return {"corpus": corpus.name, "minutes_flag": args.minutes or None, "goals_met": sum(m for m, _ in goals.values()),
            "goals": len(goals), **{who: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                                     for who, s in scores.items()}}


def run_suite(args: argparse.Namespace) -> None:
    unknown = set(args.suite) - set(CORPORA)
    if unknown:
        raise SystemExit(f"unknown corpora {sorted(unknown)}; the suite has {', '.join(CORPORA)}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="music-suite-") as tmp:
        base = args.models_dir or Path(tmp)
        results = [run_corpus(CORPORA[name], args, base / name) for name in args.suite or CORPORA]
    print(json.dumps([{k: r[k] for k in ("corpus", "goals_met", "goals", "minutes_flag")} for r in results]))
