"""The music kind: the token or frame RNN (and its benchmark baseline) on the shared trainer,
and the finished model that generates files and live sessions.

Training data comes from exactly one source: the user's MIDI folder (`midi`), the music21
Bach chorales (`corpus="bach"`), or the JSB benchmark split (`jsb`, tests and benchmarks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.data.bach_corpus import load_bach
from engine.data.jsb import load_jsb
from engine.data.midi_files import MidiSkip, load_midi_folder, read_midi
from engine.data.piece import N_KEYS, Piece, split_by_file, transpose_limits, transposed
from engine.kinds.music_batch import collate, encode_window
from engine.kinds.music_config import MusicConfig
from engine.kinds.music_eval import baseline_nll, frame_nll, token_nll
from engine.kinds.music_output import render_wav, roll_image, roll_to_midi, save_png
from engine.kinds.music_sampling import Controls, Stepper
from engine.kinds.music_session import MusicSession, NoteEvent
from engine.models.music_baseline import MusicBaseline
from engine.models.music_frame import MusicFrameRNN
from engine.models.music_rnn import MusicRNN, build_music_net
from engine.train.objective import Objective

CORPORA = ("bach",)


def load_pieces(config: MusicConfig, *, midi=None, corpus=None, jsb=None) -> tuple[list[Piece], list[Piece], dict]:
    """(train, valid, summary) from the one source given."""
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
        pieces, skipped = load_bach(spq, config.corpus_limit)
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
        cfg = config if isinstance(config, MusicConfig) else MusicConfig.from_dict(config)
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
                         "steps_per_quarter": cfg.steps_per_quarter, "holds": cfg.model.holds}

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
        model = MusicModel(_unwrap(self.nets["rnn"]), self.config)
        roll = model.generate(bars=8, seed=0)
        _unwrap(self.nets["rnn"]).train()
        return roll_image(roll, model.steps_per_bar)

    def data_summary(self) -> dict[str, Any]:
        return self._summary


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return getattr(net, "module", net)  # DDP wraps the module


class MusicModel:
    """A trained music model: generation to files, and live sessions."""

    def __init__(self, rnn: MusicRNN | MusicFrameRNN, config: dict, baseline: MusicBaseline | None = None):
        self.rnn = rnn.eval()
        self.config = config
        self.baseline = baseline  # the benchmark baseline, when it was trained alongside
        self.steps_per_quarter = int(config.get("steps_per_quarter", 4))
        self.steps_per_bar = rnn.config.bar_steps or 4 * self.steps_per_quarter

    def read_primer(self, primer: str | Path | bytes | Piece) -> Piece:
        """A MIDI clip (path or bytes) quantised to this model's grid; raises ValueError if unusable."""
        if isinstance(primer, Piece):
            return primer
        try:
            return read_midi(primer, self.steps_per_quarter)
        except MidiSkip as e:
            raise ValueError(f"cannot prime from this MIDI clip: {e}") from e

    def generate(self, bars: float = 8, controls: Controls | None = None, *, seed: int = 0,
                 primer: str | Path | bytes | Piece | None = None) -> np.ndarray:
        """A roll (steps, 88) of the primer (if any) followed by `bars` bars of continuation."""
        controls = (controls or Controls()).checked()
        steps = int(round(bars * self.steps_per_bar))
        if steps <= 0:
            raise ValueError(f"bars must be > 0, got {bars}")
        rng = np.random.default_rng(seed)
        clip = self.read_primer(primer) if primer is not None else None
        head = clip.roll if clip is not None else np.zeros((0, N_KEYS), np.int8)
        # Start the primer where it starts in its bar, so the continuation is bar-aligned.
        stepper = Stepper(self.rnn, bar_phase=clip.bar_phase if clip is not None else 0)
        for frame in head:
            stepper.force(frame)
        allowed = controls.allowed_keys()
        body = [stepper.sample(controls, rng, allowed) for _ in range(steps)]
        return np.concatenate([head, np.stack(body)]).astype(np.int8)

    def write(self, roll: np.ndarray, out_dir: str | Path, stem: str = "music", *, bpm: float = 120.0,
              primer_steps: int | None = None) -> dict[str, Path | None]:
        """{"midi", "png", "wav"} files for a roll; "wav" is None without fluidsynth."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        midi = out / f"{stem}.mid"
        roll_to_midi(roll, self.steps_per_quarter, bpm).save(midi)
        png = save_png(roll, out / f"{stem}.png", self.steps_per_bar, split_at=primer_steps)
        return {"midi": midi, "png": png, "wav": render_wav(midi, out / f"{stem}.wav")}

    def session(self, *, seed: int = 0, controls: Controls | None = None,
                priming: list[NoteEvent | dict] | None = None, ticks_per_beat: int = 480,
                channel: int = 0, velocity: int = 80) -> MusicSession:
        return MusicSession(self.rnn, self.steps_per_quarter, seed=seed, controls=controls, priming=priming,
                            ticks_per_beat=ticks_per_beat, channel=channel, velocity=velocity)


def load(config: dict, weights: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> MusicModel:
    """The finished model from a checkpoint: `weights` keys are "<net>.<param>" ("rnn.head.weight")."""
    cfg = MusicConfig.from_dict(config)
    rnn = build_music_net(cfg.model)
    own = {k[len("rnn."):]: v for k, v in weights.items() if k.startswith("rnn.")}
    if not own:
        raise ValueError(f"no 'rnn.*' weights in this checkpoint (keys start with "
                         f"{sorted({k.split('.')[0] for k in weights})}); is it a music model?")
    rnn.load_state_dict(own)
    return MusicModel(rnn.to(device), cfg.to_dict(), load_baseline(config, weights, device))


def load_baseline(config: dict, weights: dict[str, torch.Tensor], device: torch.device | str = "cpu",
                  ) -> MusicBaseline | None:
    """The benchmark baseline from the same checkpoint, or None if it was not trained."""
    cfg = MusicConfig.from_dict(config)
    own = {k[len("baseline."):]: v for k, v in weights.items() if k.startswith("baseline.")}
    if cfg.baseline is None or not own:
        return None
    net = MusicBaseline(cfg.baseline)
    net.load_state_dict(own)
    return net.to(device).eval()


def evaluate_jsb(model: MusicModel, baseline: MusicBaseline | None, jsb: str | Path,
                 split: str = "test") -> dict[str, float]:
    """The benchmark: exact frame NLL (nats per step) on a JSB quarter-note split, for the
    token model and (if given) the independent-Bernoulli baseline."""
    if model.steps_per_quarter != 1 or model.rnn.config.holds:
        raise ValueError("the JSB benchmark needs a model trained on quarter-note steps without holds "
                         "(train with jsb=PATH and steps_per_quarter=1)")
    pieces = load_jsb(jsb, "quarter")[split]
    device = next(model.rnn.parameters()).device
    ours = frame_nll(model.rnn, pieces, device)
    out = {"nll": ours["nll"], "steps": ours["steps"]}
    if baseline is not None:
        out["baseline_nll"] = frame_nll(baseline, pieces, device)["nll"]
    return out
