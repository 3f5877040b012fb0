"""The music kind's config: the RNN (token or frame architecture), the optional benchmark baseline, and the data settings.

Kept apart from engine.music.objective so the engine can name the config without importing
the data pipelines (mido, music21, PIL).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from engine.config import build
from engine.music.baseline import MusicBaselineConfig
from engine.music.frame_model import MusicFrameRNN
from engine.music.token_model import MusicRNN, MusicRNNConfig


@dataclass
class MusicConfig:
    """The defaults are the shipped model's recipe (engine/recipes/music.toml), for every data source."""
    model: MusicRNNConfig = field(default_factory=MusicRNNConfig)
    baseline: MusicBaselineConfig | None = None  # also train the independent-Bernoulli baseline
    steps_per_quarter: int = 4    # quantisation grid: 4 = 16th notes (JSB: 1 = quarter, or 4)
    seq_steps: int = 64           # training window in steps (4 bars of 4/4)
    transpose: int = 5            # augmentation: random shift in [-transpose, +transpose] semitones
    valid_fraction: float = 0.1   # of files held out (MIDI folder, Bach corpus)
    keep_drums: bool = False
    corpus_limit: int | None = None  # use only the first N corpus scores (tests)
    seed: int = 0
    # An equal-weight mixture of this many networks (engine/music/mixture.py), made from trained
    # models by `atelier models mix`; a training run trains one.
    members: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


# Settings added after models were first stored, and the value those models had.
_STORED_BEFORE = {"arch": "token"}


def stored_config(config: dict) -> MusicConfig:
    """The MusicConfig of a stored model: its own values, and for settings it predates, what it was trained with.
    A model stored with a removed setting on cannot be loaded (MusicRNNConfig.REMOVED): it has to be trained again."""
    return build(MusicConfig, {**config, "model": {**_STORED_BEFORE, **(config.get("model") or {})}})


def build_music_net(config: MusicRNNConfig) -> nn.Module:
    """The network `config.arch` names."""
    if config.arch == "token":
        return MusicRNN(config)
    if config.arch == "frame":
        return MusicFrameRNN(config)
    raise ValueError(f"arch must be 'token' or 'frame', not {config.arch!r}")
