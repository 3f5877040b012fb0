"""Turning Pieces into padded tensors for the token model and the baseline."""
from __future__ import annotations

import numpy as np
import torch

from engine.music.piece import N_KEYS, Piece
from engine.music.tokens import TokenLayout, roll_to_tokens, token_context


def encode_window(piece: Piece, start: int, length: int, layout: TokenLayout) -> dict[str, np.ndarray]:
    """Tokens and conditioning for steps [start, start+length) of a piece.

    The step before the window is known to the model through `prev` (zeros at the start
    of the piece), as it would be when the piece is read from its start.
    """
    roll = piece.roll[start:start + length]
    prev_row = piece.roll[start - 1] if start > 0 else np.zeros(N_KEYS, np.int8)
    tokens = roll_to_tokens(roll, layout, prev_row)
    ctx = token_context(tokens, layout)
    rows = np.vstack([prev_row[None], roll])
    return {
        "inputs": ctx["inputs"], "targets": tokens, "floor": ctx["floor"],
        "pos": (start + ctx["step"] + piece.bar_phase) % piece.steps_per_bar,
        "prev": rows[ctx["step"]],
        "tok_step": ctx["step"], "written": ctx["written"],  # for the frame model
        "step_pos": (start + np.arange(len(roll)) + piece.bar_phase) % piece.steps_per_bar,
        "roll": roll, "roll_prev": rows[:-1],  # for the baseline and the frame model: step t and step t-1
    }


def collate(items: list[dict[str, np.ndarray]], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Pad a list of encoded windows into one batch; padded targets are -1."""
    n_tok = max(len(it["targets"]) for it in items)
    n_step = max(len(it["roll"]) for it in items)
    B = len(items)
    out = {
        "inputs": np.zeros((B, n_tok), np.int64), "targets": np.full((B, n_tok), -1, np.int64),
        "floor": np.zeros((B, n_tok), np.int64), "pos": np.zeros((B, n_tok), np.int64),
        "prev": np.zeros((B, n_tok, N_KEYS), np.float32),
        "tok_step": np.zeros((B, n_tok), np.int64), "written": np.zeros((B, n_tok, N_KEYS), np.float32),
        "step_pos": np.zeros((B, n_step), np.int64),
        "roll": np.zeros((B, n_step, N_KEYS), np.float32), "roll_prev": np.zeros((B, n_step, N_KEYS), np.float32),
        "step_mask": np.zeros((B, n_step), np.float32),
    }
    for b, it in enumerate(items):
        k, t = len(it["targets"]), len(it["roll"])
        for name in ("inputs", "targets", "floor", "pos", "tok_step", "written"):
            out[name][b, :k] = it[name]
        out["prev"][b, :k] = it["prev"] > 0
        out["step_pos"][b, :t] = it["step_pos"]
        out["roll"][b, :t] = it["roll"] > 0
        out["roll_prev"][b, :t] = it["roll_prev"] > 0
        out["step_mask"][b, :t] = 1
    return {name: torch.from_numpy(a).to(device) for name, a in out.items()}
