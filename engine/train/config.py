"""The shared trainer's settings."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    # A run ends at its time budget; a step count, when given, only ends it earlier. 0 means none.
    steps: int = 0
    minutes: float = 10.0
    batch_size: int = 16  # global: split across processes under torchrun
    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 2e-4
    momentum: float = 0.9  # sgd
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | linear (decay to 0 at `steps`)
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 means off
    checkpoint_every: int = 500
    eval_every: int = 0
    # An evaluate() metric, lower is better (e.g. "valid_nll"): with eval_every, the model saved at
    # the end is the one that scored best on it, so a run that overfits its data keeps its best point.
    keep_best: str = ""
    patience: int = 0  # with keep_best: end the run after this many evaluations without a new best
    preview_every: int = 0
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {"optimizer": ("sgd", "adam", "adamw"), "schedule": ("constant", "cosine", "linear")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("batch_size", "checkpoint_every", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.steps < 0 or self.minutes < 0:
            raise ValueError(f"steps and minutes cannot be negative, got {self.steps} and {self.minutes}")
        if self.keep_best and not self.eval_every:
            raise ValueError(f"keep_best={self.keep_best!r} needs evaluations to compare: set eval_every too")
        if self.patience and not self.keep_best:
            raise ValueError("patience counts evaluations without a new best: set keep_best (and eval_every) too")
        if not self.steps and not self.minutes:
            raise ValueError("a run needs an end: give a time budget (minutes) or a step count (steps)")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
