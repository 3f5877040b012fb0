"""The music kind's config: the RNN (token or frame architecture), the optional benchmark baseline, and the data settings.

Kept apart from engine.kinds.music so the engine can name the config without importing
the data pipelines (mido, music21, PIL).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from engine.models.music_baseline import MusicBaselineConfig
from engine.models.music_rnn import MusicRNNConfig


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

    @classmethod
    def from_dict(cls, d: dict | None) -> "MusicConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown music config key(s) {sorted(unknown)}; known: {sorted(known)}")
        model = _sub(MusicRNNConfig, d.pop("model", None), "model")
        base = d.pop("baseline", None)
        base = _sub(MusicBaselineConfig, base, "baseline") if base not in (None, False) else None
        return cls(model=model, baseline=base, **d)

    def to_dict(self) -> dict:
        return asdict(self)


def _sub(cls, d, name: str):
    if d is not None and not isinstance(d, (dict, bool)) and hasattr(d, "__dataclass_fields__"):
        return d  # already built (the trainer builds nested configs from files and --set)
    d = {} if d in (None, True) else dict(d)
    known = {f.name for f in fields(cls)}
    if set(d) - known:
        raise ValueError(f"unknown {name} config key(s) {sorted(set(d) - known)}; known: {sorted(known)}")
    return cls(**d)
