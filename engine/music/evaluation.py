"""Exact frame-level negative log-likelihood, the JSB benchmark metric.

Boulanger-Lewandowski et al. (2012): each time step is a binary 88-key vector; the score
is -log P(step t | steps < t) in nats, averaged over every step of every test piece, each
piece read from its start. For the token model, P(step) is the product of the masked
softmax probabilities of the step's tokens (STEP_END included), which is exact because
every key set has exactly one spelling.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from engine.music.baseline import MusicBaseline
from engine.music.batch import collate, encode_window
from engine.music.frame_model import MusicFrameRNN
from engine.music.mixture import MusicMixture
from engine.music.piece import Piece
from engine.music.token_model import MusicRNN
from engine.music.tokens import TokenLayout


def token_nll(model: MusicRNN | MusicFrameRNN | MusicMixture, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """-log p of every target token (B, L); 0 at padding. A mixture's p is the mean of its members'."""
    if isinstance(model, MusicMixture):
        nll = torch.stack([token_nll(m, batch) for m in model.members]).double()
        return (math.log(len(model.members)) - torch.logsumexp(-nll, 0)) * (batch["targets"] >= 0)
    if isinstance(model, MusicFrameRNN):
        logits, _ = model(batch["roll_prev"], batch["step_pos"], batch["tok_step"], batch["inputs"], batch["written"])
    else:
        logits, _ = model(batch["inputs"], batch["pos"], batch["prev"])
    logits = model.mask(logits, batch["floor"], batch["prev"])
    targets = batch["targets"]
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return nll * (targets >= 0)


def baseline_nll(model: MusicBaseline, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """-log p of every step's key vector (B, T); 0 at padding."""
    logits, _ = model(batch["roll_prev"])
    return MusicBaseline.step_nll(logits, batch["roll"]) * batch["step_mask"]


def _whole_pieces(pieces: list[Piece], layout, device, batch_size: int):
    for i in range(0, len(pieces), batch_size):
        chunk = pieces[i:i + batch_size]
        yield collate([encode_window(p, 0, p.steps, layout) for p in chunk], device)


@torch.no_grad()
def frame_nll(model: MusicRNN | MusicFrameRNN | MusicMixture | MusicBaseline, pieces: list[Piece],
              device: torch.device | str = "cpu", batch_size: int = 16) -> dict[str, float]:
    """{"nll": nats per step, "steps": steps scored} over whole pieces, model in eval mode."""
    if not pieces:
        raise ValueError("no pieces to evaluate on")
    was_training = model.training
    model.eval()
    layout = None if isinstance(model, MusicBaseline) else model.config.layout
    if layout is not None and layout.holds and any(not p.has_onsets for p in pieces):
        raise ValueError("a model with onset/held tokens cannot score pieces without onsets (e.g. JSB); "
                         "train with holds=false for the benchmark")
    total, steps = 0.0, 0
    for batch in _whole_pieces(pieces, layout or TokenLayout(), device, batch_size):
        nll = token_nll(model, batch) if layout is not None else baseline_nll(model, batch)
        total += float(nll.double().sum())
        steps += int(batch["step_mask"].sum())
    model.train(was_training)
    return {"nll": total / steps, "steps": steps}


def mixture_frame_nll(models: list[MusicRNN | MusicFrameRNN], pieces: list[Piece], device: torch.device | str = "cpu",
                      batch_size: int = 16) -> dict[str, float]:
    """Exact frame NLL of the equal-weight, token-by-token mixture of several models: each model
    reads the same prefix, so the average of their next-token distributions is a distribution
    of the next token, and a step's probability is still the product over its tokens
    (engine/music/mixture.py; a stored mixture scores the same through frame_nll)."""
    modes = [m.training for m in models]
    try:
        return frame_nll(MusicMixture(models).eval(), pieces, device, batch_size)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
