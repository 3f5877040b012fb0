"""What a model kind hands the shared trainer.

The trainer owns the loop: optimisers, schedule, checkpoints, resume, time budget,
progress, distributed data parallel. A model kind owns what is specific to it and
subclasses `Objective`:

- `nets`: every module whose weights belong in the checkpoint, by name
  (e.g. {"G": ..., "D": ..., "G_ema": ...}). During distributed training the trainer
  replaces entries with DDP wrappers, so always reach modules through `self.nets[name]`.
- `param_groups()`: one optimiser per group, stepped in dict order every step
  (a GAN returns {"D": ..., "G": ...}; most kinds return one group).
- `batch(keys)`: the batch for a tensor of int64 sample keys. It must be a pure function
  of the keys (pick the item with `key % n`, seed augmentation from the key): that is
  what makes resume exact and lets N processes share one global batch.
- `loss(group, batch, step)`: the scalar to back-propagate for that group, plus floats to log.
- `after_step`, `evaluate`, `preview`: optional hooks.
- `export_config(final)`: the config saved with the model (by default `config`); a kind may add
  what it measures on the trained nets, and measure less for the checkpoints written while
  training runs (final False), since those count against the time budget.
- `export_nets`: the nets that ship in the finished model (e.g. ("G_ema",)).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class Objective:
    config: Any
    nets: dict[str, nn.Module]
    export_nets: tuple[str, ...] = ()
    # Multiplies the trainer's learning rate per group (e.g. {"D": 4.0} for TTUR).
    lr_scale: dict[str, float] = {}
    # About how many training steps' time the end of a run takes (the final `evaluate` and
    # `export_config`): the trainer stops training that much before the time budget runs out.
    finish_steps: float = 0.0

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": [p for net in self.nets.values() for p in net.parameters() if p.requires_grad]}

    def batch(self, keys: torch.Tensor) -> Any:
        raise NotImplementedError

    def loss(self, group: str, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        pass

    def evaluate(self) -> dict[str, float]:
        return {}

    def export_config(self, final: bool = True) -> Any:
        return self.config

    def preview(self) -> np.ndarray | None:
        """A uint8 HxWx3 picture of what the model makes now (sample grid), or None."""
        return None

    def data_summary(self) -> dict[str, Any]:
        """What the model was trained on, stored in the checkpoint metadata."""
        return {}
