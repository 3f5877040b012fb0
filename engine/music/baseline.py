"""The benchmark baseline: an RNN over the 88-key roll with independent Bernoulli outputs.

At each step it reads the previous step's keys and predicts every key of this step
independently (the model family for which Chung et al. 2014 report 8.67 nats (LSTM) and
8.54 (GRU) on the JSB chorales).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MusicBaselineConfig:
    n_keys: int = 88
    cell: str = "lstm"
    n_layers: int = 1
    d_hidden: int = 256
    dropout: float = 0.1


class MusicBaseline(nn.Module):
    def __init__(self, config: MusicBaselineConfig):
        super().__init__()
        if config.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', not {config.cell!r}")
        self.config = config
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn(config.n_keys, config.d_hidden, config.n_layers, batch_first=True,
                       dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_hidden, config.n_keys)

    def forward(self, prev: torch.Tensor, state=None):
        """Per-key logits (B, T, n_keys) of step t given the keys of step t-1, prev: (B, T, n_keys)."""
        h, state = self.rnn(prev.float(), state)
        return self.head(self.drop(h)), state

    @staticmethod
    def step_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in nats of each step's binary key vector, (B, T)."""
        return nn.functional.binary_cross_entropy_with_logits(
            logits, (target > 0).float(), reduction="none").sum(-1)
