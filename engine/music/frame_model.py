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

With `lookback` (after Magenta's Lookback RNN), the music's bar structure is an input: the LSTM
reads whether step t-1 repeated the step one / two bars before it, and the decoder can copy
the step one / two bars back (in the bar of the music itself): each token's logit gets a gated
bonus, the gates computed from the decoder's state, for the tokens that spell that step (its
onsets, its held keys, and its STEP_END once none of its keys is left to write). The copy is
key-independent, so it cannot memorise a piece: an earlier version fed the two steps back as
88-key inputs and learnt the training pieces (essen, 8 minutes: held-out NLL 1.13 against 0.97).
"""
from __future__ import annotations

import numpy as np
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
        flags = len(LOOKBACK_BARS) if config.lookback else 0
        self.rnn = rnn(n + config.bar_steps + flags, config.d_hidden, config.n_layers, batch_first=True,
                       dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.ctx_proj = nn.Linear(config.d_hidden, d)          # h_t, once per step
        self.prev_proj = nn.Linear(n, d, bias=False)           # the previous step's keys, straight to the decoder
        self.set_proj = nn.Linear(n, d, bias=False)            # keys already written in this step
        self.last_embed = nn.Embedding(vocab, d)               # the last token (STEP_END: none yet)
        self.hidden = nn.ModuleList(nn.Linear(d, d) for _ in range(config.decoder_layers - 1))
        self.head = nn.Linear(d, vocab)
        self.copy_gate = nn.Linear(d, flags) if flags else None  # how much to copy each bar back

    def time_input(self, prev: torch.Tensor, pos: torch.Tensor, lookback: torch.Tensor | None = None) -> torch.Tensor:
        """The time LSTM's input (..., n_keys + bar_steps [+ repeat flags]) from the previous keys,
        position in bar and (with config.lookback) the repeat flags of `lookback_inputs`."""
        parts = [prev.float()]
        if self.config.bar_steps:
            parts.append(F.one_hot(pos % self.config.bar_steps, self.config.bar_steps).to(parts[0].dtype))
        if self.config.lookback:
            parts.append(self._lookback(lookback)[..., -len(LOOKBACK_BARS):])
        return torch.cat(parts, dim=-1)

    def _lookback(self, lookback: torch.Tensor | None) -> torch.Tensor:
        if lookback is None:
            raise ValueError("this model reads the bars before each step (lookback): pass `lookback`")
        return lookback.to(torch.float32)

    def step_context(self, prev: torch.Tensor, pos: torch.Tensor, state=None, lookback: torch.Tensor | None = None):
        """The decoder's per-step input (B, T, d_decoder) and the LSTM state.

        prev: (B, T, n_keys) keys of the step before each step; pos: (B, T) position in bar;
        lookback: (B, T, lookback_width) with config.lookback.
        """
        h, state = self.rnn(self.time_input(prev, pos, lookback), state)
        return self.ctx_proj(self.drop(h)) + self.prev_proj(prev.float()), state

    def decode(self, ctx: torch.Tensor, last: torch.Tensor, written: torch.Tensor,
               copy: torch.Tensor | None = None) -> torch.Tensor:
        """Token logits (..., vocab) from the step context, last token and keys written so far;
        with lookback, `copy` (..., bars back, vocab) from `copy_tokens`."""
        # tanh GELU: the numpy twin (engine/music/fast.py) computes it exactly, and fast
        x = F.gelu(ctx + self.last_embed(last) + self.set_proj(written.to(ctx.dtype)), approximate="tanh")
        for layer in self.hidden:
            x = F.gelu(layer(self.drop(x)), approximate="tanh")
        x = self.drop(x)
        logits = self.head(x)
        if self.copy_gate is not None:
            if copy is None:
                raise ValueError("this model copies the bars before (lookback): pass `copy`")
            logits = logits + (self.copy_gate(x).unsqueeze(-1) * copy).sum(-2)
        return logits

    def copy_tokens(self, lookback: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
        """(..., bars back, vocab): 1 for the tokens that would spell the step each bar back, from
        the `lookback_inputs` of the token's step (...,  lookback_width) and the token's floor (the
        lowest key it may write): its onsets, its held keys, and STEP_END when it has no key at or
        above the floor."""
        n = self.config.n_keys
        out = []
        for i in range(len(LOOKBACK_BARS)):
            sounding, onset = lookback[..., 2 * n * i:2 * n * i + n], lookback[..., 2 * n * i + n:2 * n * (i + 1)]
            above = F.pad(sounding.flip(-1).cumsum(-1).flip(-1), (0, 1))  # keys sounding at or above each key
            end = (above.gather(-1, floor.unsqueeze(-1)) == 0).to(sounding.dtype)
            keys = [onset, sounding - onset] if self.config.holds else [sounding]
            out.append(torch.cat(keys + [end], dim=-1))
        return torch.stack(out, dim=-2)

    def forward(self, roll_prev: torch.Tensor, step_pos: torch.Tensor, tok_step: torch.Tensor,
                inputs: torch.Tensor, written: torch.Tensor, state=None, lookback: torch.Tensor | None = None,
                floor: torch.Tensor | None = None):
        """Logits (B, L, vocab) of every target token, and the LSTM state.

        roll_prev: (B, T, n_keys) keys of step t-1 for each step t; step_pos: (B, T) position
        in bar of each step; tok_step: (B, L) the step of each target token; inputs: (B, L) the
        token before each target (STEP_END at a step's start); written: (B, L, n_keys) keys
        already written in the target's step; with lookback, lookback: (B, T, lookback_width)
        (`lookback_inputs`) and floor: (B, L) the lowest key each target may be.
        """
        ctx, state = self.step_context(roll_prev, step_pos, state, lookback)
        ctx = ctx.gather(1, tok_step.unsqueeze(-1).expand(-1, -1, ctx.shape[-1]))
        copy = None
        if self.copy_gate is not None:
            lookback = self._lookback(lookback)
            if floor is None:
                raise ValueError("this model copies the bars before (lookback): pass `floor`")
            at = lookback.gather(1, tok_step.unsqueeze(-1).expand(-1, -1, lookback.shape[-1]))
            copy = self.copy_tokens(at, floor)
        return self.decode(ctx, inputs, written, copy), state

    def mask(self, logits: torch.Tensor, floor: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return mask_logits(self.config, logits, floor, prev)


LOOKBACK_BARS = (1, 2)  # read the step this many bars before


def lookback_width(n_keys: int) -> int:
    """Lookback inputs per step: sounding and starting keys per bar looked back (for the copy),
    and one repeat flag per bar (for the LSTM)."""
    return len(LOOKBACK_BARS) * (2 * n_keys + 1)


def lookback_inputs(rows: np.ndarray, steps: np.ndarray, bar: int) -> np.ndarray:
    """(len(steps), lookback_width) float32 for steps `steps` of `rows` (a roll of 0/1/2 cells):
    for each bar back b in LOOKBACK_BARS, the keys sounding and starting at t - b*bar, then for
    each b whether step t-1 equals step t-1-b*bar (cells, onsets included). Steps before the
    roll's start read as missing: no keys, no repeat."""
    n = rows.shape[1]
    back = (len(LOOKBACK_BARS) and max(LOOKBACK_BARS)) * bar + 1
    padded = np.concatenate([np.full((back, n), -1, np.int8), rows.astype(np.int8)])
    t = np.asarray(steps) + back
    keys, flags = [], []
    prev = padded[t - 1]
    for b in LOOKBACK_BARS:
        then = padded[t - b * bar]
        keys += [then > 0, then == 2]
        before = padded[t - 1 - b * bar]
        flags.append(((prev == before).all(axis=1) & (before >= 0).all(axis=1) & (prev >= 0).all(axis=1))[:, None])
    return np.concatenate(keys + flags, axis=1).astype(np.float32)
