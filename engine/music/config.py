"""The music kind's config: the RNN (token or frame architecture), the optional benchmark baseline, and the data settings.

Kept apart from engine.music.objective so the engine can name the config without importing
the data pipelines (mido, music21, PIL).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from engine.music.baseline import MusicBaselineConfig
from engine.music.frame_model import MusicFrameRNN
from engine.music.token_model import MusicRNN, MusicRNNConfig


@dataclass
class MusicConfig:
    model: MusicRNNConfig = field(default_factory=MusicRNNConfig)
    baseline: MusicBaselineConfig | None = None  # also train the independent-Bernoulli baseline
    steps_per_quarter: int = 4    # quantisation grid: 4 = 16th notes (JSB: 1 = quarter, or 4)
    seq_steps: int = 64           # training window in steps
    transpose: int = 6            # augmentation: random shift in [-transpose, +transpose] semitones
    valid_fraction: float = 0.1   # of files held out (MIDI folder, Bach corpus)
    keep_drums: bool = False
    corpus_limit: int | None = None  # use only the first N corpus scores (tests)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build_music_net(config: MusicRNNConfig) -> nn.Module:
    """The network `config.arch` names."""
    if config.arch == "token":
        return MusicRNN(config)
    if config.arch == "frame":
        return MusicFrameRNN(config)
    raise ValueError(f"arch must be 'token' or 'frame', not {config.arch!r}")
