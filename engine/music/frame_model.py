"""The "frame" music network: an LSTM over time steps and a small token decoder within each step.

The time LSTM runs once per step: it reads the previous step's keys and the position in
the bar and gives h_t. The decoder then spells step t as ascending tokens (keys, then
STEP_END, as in engine/music/tokens.py), each a softmax conditioned on h_t, the keys
already written in this step (an 88-vector) and the last token written. Because the order is
ascending, that set and the last key are all there is to know about the step's prefix, so
the decoder needs no recurrence: in training every token of a window is one batched MLP
call, and only the time LSTM is sequential (about 5x fewer sequential steps than the
token LSTM). Masking is the token model's (`mask_logits`), so a step's probability is
still exactly the product of its token probabilities.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from engine.music.token_model import MusicRNNConfig, mask_logits


class MusicFrameRNN(nn.Module):
    def __init__(self, config: MusicRNNConfig):
        super().__init__()
        if config.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', not {config.cell!r}")
        self.config = config
        n, d, vocab = config.n_keys, config.d_decoder, config.layout.vocab_size
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn(n + config.bar_steps, config.d_hidden, config.n_layers, batch_first=True,
                       dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.ctx_proj = nn.Linear(config.d_hidden, d)          # h_t, once per step
        self.prev_proj = nn.Linear(n, d, bias=False)           # the previous step's keys, straight to the decoder
        self.set_proj = nn.Linear(n, d, bias=False)            # keys already written in this step
        self.last_embed = nn.Embedding(vocab, d)               # the last token (STEP_END: none yet)
        self.hidden = nn.ModuleList(nn.Linear(d, d) for _ in range(config.decoder_layers - 1))
        self.head = nn.Linear(d, vocab)

    def time_input(self, prev: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The time LSTM's input (..., n_keys + bar_steps) from the previous keys and position in bar."""
        parts = [prev.float()]
        if self.config.bar_steps:
            parts.append(F.one_hot(pos % self.config.bar_steps, self.config.bar_steps).to(parts[0].dtype))
        return torch.cat(parts, dim=-1)

    def step_context(self, prev: torch.Tensor, pos: torch.Tensor, state=None):
        """The decoder's per-step input (B, T, d_decoder) and the LSTM state.

        prev: (B, T, n_keys) keys of the step before each step; pos: (B, T) position in bar.
        """
        h, state = self.rnn(self.time_input(prev, pos), state)
        return self.ctx_proj(self.drop(h)) + self.prev_proj(prev.float()), state

    def decode(self, ctx: torch.Tensor, last: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
        """Token logits (..., vocab) from the step context, last token and keys written so far."""
        # tanh GELU: the numpy twin (engine/music/fast.py) computes it exactly, and fast
        x = F.gelu(ctx + self.last_embed(last) + self.set_proj(written.to(ctx.dtype)), approximate="tanh")
        for layer in self.hidden:
            x = F.gelu(layer(self.drop(x)), approximate="tanh")
        return self.head(self.drop(x))

    def forward(self, roll_prev: torch.Tensor, step_pos: torch.Tensor, tok_step: torch.Tensor,
                inputs: torch.Tensor, written: torch.Tensor, state=None):
        """Logits (B, L, vocab) of every target token, and the LSTM state.

        roll_prev: (B, T, n_keys) keys of step t-1 for each step t; step_pos: (B, T) position
        in bar of each step; tok_step: (B, L) the step of each target token; inputs: (B, L) the
        token before each target (STEP_END at a step's start); written: (B, L, n_keys) keys
        already written in the target's step.
        """
        ctx, state = self.step_context(roll_prev, step_pos, state)
        ctx = ctx.gather(1, tok_step.unsqueeze(-1).expand(-1, -1, ctx.shape[-1]))
        return self.decode(ctx, inputs, written), state

    def mask(self, logits: torch.Tensor, floor: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return mask_logits(self.config, logits, floor, prev)
