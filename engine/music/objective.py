"""What the shared trainer trains for the music kind: `MusicObjective`, the token or frame RNN
(and optionally its benchmark baseline) on windows of pieces.

Training data comes from exactly one source: the user's MIDI folder (`midi`), the music21
Bach chorales (`corpus="bach"`), or the JSB benchmark split (`jsb`, tests and benchmarks).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import build
from engine.music.bach import load_bach
from engine.music.baseline import MusicBaseline
from engine.music.batch import collate, encode_window
from engine.music.config import MusicConfig, build_music_net
from engine.music.evaluation import baseline_nll, frame_nll, token_nll
from engine.music.generation import MusicModel, avoids_parallels
from engine.music.jsb import load_jsb
from engine.music.midi_files import load_midi_folder
from engine.music.output import roll_image
from engine.music.piece import Piece, split_by_file, transpose_limits, transposed
from engine.music.style import bar_repeats, parallels
from engine.train.objective import Objective

CORPORA = ("bach",)


def load_pieces(config: MusicConfig, *, midi=None, corpus=None, jsb=None,
                progress=None) -> tuple[list[Piece], list[Piece], dict]:
    """(train, valid, summary) from the one source given; `progress(fraction, message)` hears
    while the Bach corpus is converted into its cache (minutes, once)."""
    if sum(x is not None for x in (midi, corpus, jsb)) != 1:
        raise ValueError("give exactly one data source: midi=FOLDER, corpus='bach' or jsb=FOLDER")
    spq = config.steps_per_quarter
    if jsb is not None:
        res = {1: "quarter", 4: "16th"}.get(spq)
        if res is None:
            raise ValueError(f"the JSB split comes at 1 or 4 steps per quarter, not {spq}")
        if config.model.holds:
            raise ValueError("JSB has no onset marks: set model.holds=false")
        split = load_jsb(jsb, res)
        summary = {"source": "jsb", "path": str(jsb), "resolution": res}
        return split["train"], split["valid"], summary
    if corpus is not None:
        if corpus not in CORPORA:
            raise ValueError(f"unknown corpus {corpus!r}; available: {list(CORPORA)}")
        pieces, skipped = load_bach(spq, config.corpus_limit, progress)
        summary = {"source": "corpus", "corpus": corpus, "skipped": [{"file": f, "reason": r} for f, r in skipped]}
    else:
        pieces, report = load_midi_folder(midi, spq, config.keep_drums)
        summary = {"source": "midi", "path": str(midi), **report.summary()}
    train, valid = split_by_file(pieces, config.valid_fraction, config.seed)
    return train, valid, summary


class MusicObjective(Objective):
    def __init__(self, config: dict | MusicConfig | None = None, *, midi: str | Path | None = None,
                 corpus: str | None = None, jsb: str | Path | None = None,
                 device: torch.device | str = "cpu"):
        cfg = config if isinstance(config, MusicConfig) else build(MusicConfig, config or {})
        if cfg.members != 1:
            raise ValueError(f"members={cfg.members}: a run trains one network; train the members one by one "
                             "(other seeds) and mix them with `atelier models mix NAME MODEL MODEL...`")
        notes = []
        if jsb is not None and cfg.model.holds:  # the default's onset marks: the JSB files have none to learn
            cfg = replace(cfg, model=replace(cfg.model, holds=False))
            notes.append("trained without onset/held marks (model.holds=false): the JSB split has none")
        self.device = torch.device(device)
        self.train_pieces, self.valid_pieces, summary = load_pieces(cfg, midi=midi, corpus=corpus, jsb=jsb)
        if not self.train_pieces:
            raise ValueError("no training pieces left after the train/valid split; add more files")
        self.cfg = cfg
        self.config = cfg.to_dict()
        self.layout = cfg.model.layout
        torch.manual_seed(cfg.seed)
        self.nets = {"rnn": build_music_net(cfg.model).to(self.device)}
        if cfg.baseline is not None:
            self.nets["baseline"] = MusicBaseline(cfg.baseline).to(self.device)
        self.export_nets = tuple(self.nets)
        self._limits = [transpose_limits(p, cfg.transpose) for p in self.train_pieces]
        self._summary = {**summary, "train_pieces": len(self.train_pieces), "valid_pieces": len(self.valid_pieces),
                         "train_steps": int(sum(p.steps for p in self.train_pieces)),
                         "steps_per_quarter": cfg.steps_per_quarter, "holds": cfg.model.holds,
                         **usual_style(self.train_pieces), **({"notes": notes} if notes else {})}

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {name: list(net.parameters()) for name, net in self.nets.items()}

    def batch(self, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        items = []
        for key in keys.tolist():
            rng = np.random.default_rng([self.cfg.seed, int(key)])
            i = int(key) % len(self.train_pieces)
            lo, hi = self._limits[i]
            piece = transposed(self.train_pieces[i], int(rng.integers(lo, hi + 1)))
            length = min(self.cfg.seq_steps, piece.steps)
            start = int(rng.integers(0, piece.steps - length + 1))
            items.append(encode_window(piece, start, length, self.layout))
        return collate(items, self.device)

    def loss(self, group: str, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        steps = batch["step_mask"].sum()
        if group == "rnn":
            nll = token_nll(self.nets["rnn"], batch)
            tokens = (batch["targets"] >= 0).sum()
            return nll.sum() / tokens, {"nll_step": float(nll.detach().sum() / steps)}
        nll = baseline_nll(self.nets["baseline"], batch)
        return nll.sum() / steps, {"baseline_nll_step": float(nll.detach().sum() / steps)}

    def evaluate(self) -> dict[str, float]:
        """Exact NLL in nats per step on the held-out pieces (JSB: the valid split)."""
        if not self.valid_pieces:
            return {}
        out = {"valid_nll": frame_nll(_unwrap(self.nets["rnn"]), self.valid_pieces, self.device)["nll"]}
        if "baseline" in self.nets:
            out["valid_baseline_nll"] = frame_nll(_unwrap(self.nets["baseline"]), self.valid_pieces, self.device)["nll"]
        return out

    def preview(self) -> np.ndarray:
        model = MusicModel(_unwrap(self.nets["rnn"]), self.config, voices=self._summary["voices"],
                           avoids_parallels=avoids_parallels({"data": self._summary}),
                           bar_repeats=self._summary.get("bar_repeats"))
        roll = model.generate(bars=8, seed=0)
        _unwrap(self.nets["rnn"]).train()
        return roll_image(roll, model.steps_per_bar)

    def data_summary(self) -> dict[str, Any]:
        return self._summary


def usual_style(pieces: list) -> dict[str, Any]:
    """The meter most of the music is in (by length) and its median tempo: what generation plays
    when neither the request nor a primer says; its voices (`voices_of`), the most notes
    generation sounds at once unless told otherwise; how often its voices move in parallel
    fifths/octaves (`parallels_rate`), which decides the part-writing rule's default; and how
    often it repeats a bar (`bar_repeats_rate`), which generation does as often."""
    steps_by_meter: dict[tuple[int, int], int] = {}
    for piece in pieces:
        steps_by_meter[piece.meter] = steps_by_meter.get(piece.meter, 0) + piece.steps
    meter = max(steps_by_meter, key=steps_by_meter.get)
    return {"meter": f"{meter[0]}/{meter[1]}", "bpm": round(float(np.median([p.bpm for p in pieces])), 1),
            "voices": voices_of(pieces), "parallels_per_100": parallels_rate(pieces),
            "bar_repeats": bar_repeats_rate(pieces)}


PARALLELS_STEPS = 400_000  # enough chord changes (and bars) for a steady rate; a large folder is read up to here


def bar_repeats_rate(pieces: list) -> list[float] | None:
    """Of the music's whole bars (those with four bars before them), the shares equal to the bar
    1, 2, 3 and 4 bars before (the nearest counted): what generation repeats by default
    (engine.music.generation). None for music of fewer than 20 such bars."""
    counts, bars, steps = np.zeros(5, int), 0, 0
    for piece in pieces:
        if steps >= PARALLELS_STEPS:
            break
        c, n = bar_repeats(piece)
        counts, bars, steps = counts + c, bars + n, steps + piece.steps
    return [round(float(c) / bars, 4) for c in counts[1:]] if bars >= 20 else None


def parallels_rate(pieces: list) -> float | None:
    """Parallel fifths and octaves per 100 chord changes, by the style measure's own rule
    (engine.music.style.parallels), pooled over the pieces (the first PARALLELS_STEPS steps of
    them); None when the music has no chord changes (a melody)."""
    found, changes, steps = 0, 0, 0
    for piece in pieces:
        if steps >= PARALLELS_STEPS:
            break
        n, c = parallels(piece)
        found, changes, steps = found + n, changes + c, steps + piece.steps
    return round(100 * found / changes, 2) if changes else None


def voices_of(pieces: list) -> int:
    """How many voices the music is written for: the median over pieces of the most keys sounding
    at once in each. The median, not the maximum or a share of steps: in the Bach chorales 295 of
    313 training pieces never sound more than 4 keys, while overlaps at ties and a few pieces with
    extra parts put 3 % of steps at 5 to 10 (99 % of steps have at most 6)."""
    most = [int((p.roll > 0).sum(axis=1).max()) for p in pieces if p.steps]
    return max(1, int(np.median(most))) if most else 0


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return getattr(net, "module", net)  # DDP wraps the module
