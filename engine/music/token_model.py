"""A recurrent network over piano-roll tokens (see engine/music/tokens.py).

Two architectures share the config, the tokens and the masking rule: "token" (this file)
and "frame" (engine/music/frame_model.py); `engine.music.config.build_music_net` makes either.

The token network reads one token at a time and predicts the next. Beside each input token it
sees two cheap conditioning signals about the step its target belongs to: the keys that
sounded in the previous step (an 88-vector), and the position of the step in the bar.
`mask` removes tokens that would break the ascending spelling of a step (and "held"
tokens for keys that were silent), so the softmax is an exact distribution over key sets
and a step's probability is the product of its token probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.music.tokens import TokenLayout


@dataclass
class MusicRNNConfig:
    # The defaults are the shipped model's (engine/recipes/music.toml): what a plain `atelier train music` trains.
    # Settings removed since, and the value with which a stored network is the same without them (engine.config.build).
    REMOVED = {"lookback": (False, "the lookback experiment (issue #21; bar repeats do its job)")}
    holds: bool = True        # onset/held tokens (sources with onsets) or one token per key (JSB)
    n_keys: int = 88
    cell: str = "lstm"        # "lstm" or "gru"
    n_layers: int = 2
    d_embed: int = 64         # token: embedding width (the frame arch reads keys and bar position raw)
    d_hidden: int = 128
    dropout: float = 0.1
    bar_steps: int = 16       # one-hot size of the position in the bar (16: 4/4 at 16ths; 3/4 uses 12 of them); 0: off
    prev_frame: bool = True   # token: feed the previous step's keys beside each token (frame: always)
    arch: str = "frame"       # "frame": an LSTM over steps + a token decoder (2.5x cheaper); "token": one LSTM over tokens
    d_decoder: int = 256      # frame: width of the within-step decoder MLP
    decoder_layers: int = 2   # frame: hidden layers of that MLP

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(self.holds, self.n_keys)


class MusicRNN(nn.Module):
    def __init__(self, config: MusicRNNConfig):
        super().__init__()
        if config.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', not {config.cell!r}")
        self.config = config
        vocab = config.layout.vocab_size
        self.embed = nn.Embedding(vocab, config.d_embed)
        self.bar_embed = nn.Embedding(config.bar_steps, config.d_embed) if config.bar_steps else None
        self.prev_proj = nn.Linear(config.n_keys, config.d_embed, bias=False) if config.prev_frame else None
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn(config.d_embed, config.d_hidden, config.n_layers, batch_first=True,
                       dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_hidden, vocab)

    def forward(self, inputs: torch.Tensor, step: torch.Tensor, prev: torch.Tensor, state=None):
        """Logits (B, L, vocab) for the next token, and the recurrent state.

        inputs: (B, L) int64 tokens; step: (B, L) int64 step index of each target (with the
        bar phase added); prev: (B, L, n_keys) keys sounding in the step before each target.
        """
        x = self.embed(inputs)
        if self.bar_embed is not None:
            x = x + self.bar_embed(step % self.config.bar_steps)
        if self.prev_proj is not None:
            x = x + self.prev_proj(prev.to(x.dtype))
        h, state = self.rnn(x, state)
        return self.head(self.drop(h)), state

    def mask(self, logits: torch.Tensor, floor: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return mask_logits(self.config, logits, floor, prev)


def mask_logits(config: MusicRNNConfig, logits: torch.Tensor, floor: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Logits with impossible tokens at -inf: keys below `floor` (B, L), and with holds,
    held tokens for keys not sounding in `prev` (B, L, n_keys)."""
    n = config.n_keys
    keys = torch.arange(n, device=logits.device)
    below = keys < floor.unsqueeze(-1)
    banned = [below]
    if config.holds:
        banned.append(below | ~(prev > 0))
    banned.append(torch.zeros_like(below[..., :1]))  # STEP_END is always allowed
    return logits.masked_fill(torch.cat(banned, dim=-1), float("-inf"))
