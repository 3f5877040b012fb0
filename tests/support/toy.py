"""A small regression objective that exercises the real trainer without a model kind's cost."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.train.objective import Objective


@dataclass
class ToyConfig:
    inputs: int = 8
    hidden: int = 16


class ToyObjective(Objective):
    def __init__(self, config: ToyConfig | None = None, device: str = "cpu"):
        self.config = config or ToyConfig()
        torch.manual_seed(0)
        self.nets = {"net": nn.Sequential(nn.Linear(self.config.inputs, self.config.hidden), nn.Tanh(),
                                          nn.Linear(self.config.hidden, 1)).to(device)}
        self.truth = torch.linspace(-1, 1, self.config.inputs)

    def batch(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [torch.randn(self.config.inputs, generator=torch.Generator().manual_seed(int(k))) for k in keys]
        x = torch.stack(rows)
        return x, (x @ self.truth).sin().unsqueeze(1)

    def loss(self, group: str, batch, step: int):
        x, y = batch
        loss = nn.functional.mse_loss(self.nets["net"](x), y)
        return loss, {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        x, y = self.batch(torch.arange(64))
        return {"valid_mse": nn.functional.mse_loss(self.nets["net"](x), y).item()}

    def data_summary(self) -> dict:
        return {"source": "toy regression"}
