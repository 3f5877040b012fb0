"""A mixture of music networks: one model made of several trained with the same settings.

Every member reads the same tokens, and the mixture's probability of the next token is the
mean of the members' (each member's own masked softmax). The mean of distributions is a
distribution, so a step's probability is still the product of its token probabilities and the
frame NLL stays exact (engine/music/evaluation.py). Generation samples from the same mean
(engine/music/fast.py: FastMixture), so eval, generate and live sessions see one model.

A mixture file holds the members' weights as "rnn.members.<i>.<param>" and `members: N` in its
config; a single model is a file with "rnn.<param>" and `members: 1`, as every file before.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

MAX_MEMBERS = 16
# Settings that may differ between members: they do not change the network at generation.
_FREE = {"dropout"}


class MusicMixture(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("a mixture needs at least one member")
        layout = members[0].config.layout
        if any(m.config.layout != layout for m in members):
            raise ValueError("a mixture needs models with the same token layout")
        self.members = nn.ModuleList(members)
        self.config = members[0].config  # the token layout and bar the mixture's callers read

    def mask(self, logits: torch.Tensor, floor: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return self.members[0].mask(logits, floor, prev)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings (model.* and the grid) that make two stored music configs' networks differ."""
    out = [f"model.{k}: {a['model'].get(k)!r} vs {b['model'].get(k)!r}" for k in sorted(a["model"])
           if k not in _FREE and a["model"].get(k) != b["model"].get(k)]
    if a["steps_per_quarter"] != b["steps_per_quarter"]:
        out.append(f"steps_per_quarter: {a['steps_per_quarter']} vs {b['steps_per_quarter']}")
    return out


def mix_checkpoints(members: list[tuple[str, dict, dict[str, torch.Tensor]]]) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, metadata) of the equal-weight mixture of stored music models, given as
    (name, metadata, weights). The members must have the same token layout, grid and network
    shape (the same settings, other seeds). The config, data summary and benchmark baseline are
    the first member's; the metadata lists every member's name, steps and metrics."""
    from engine.music.config import stored_config

    if not 2 <= len(members) <= MAX_MEMBERS:
        raise ValueError(f"a mixture is made of 2 to {MAX_MEMBERS} models, not {len(members)}")
    configs = []
    for name, metadata, _ in members:
        if metadata.get("kind") != "music":
            raise ValueError(f"{name!r} is a {metadata.get('kind')} model, not a music model: only music models mix")
        if metadata.get("partial"):
            raise ValueError(f"{name!r} is the checkpoint of a run that has not finished; finish it "
                             "(train with --resume) before mixing it")
        cfg = stored_config(metadata["config"])
        if cfg.members != 1:
            raise ValueError(f"{name!r} is already a mixture of {cfg.members} models; mix its members instead")
        configs.append(cfg.to_dict())
    first = members[0][0]
    for (name, _, _), config in zip(members[1:], configs[1:]):
        differ = _differences(configs[0], config)
        if differ:
            raise ValueError(f"{name!r} cannot be mixed with {first!r}: a mixture needs the same token layout, grid "
                             f"and network (models trained with the same settings and other seeds); they differ in "
                             f"{'; '.join(differ)}")
    weights = {f"rnn.members.{i}.{k[len('rnn.'):]}": v for i, (_, _, w) in enumerate(members)
               for k, v in w.items() if k.startswith("rnn.")}
    head, head_weights = members[0][1], members[0][2]
    weights.update({k: v for k, v in head_weights.items() if k.startswith("baseline.")})
    metadata = {
        "kind": "music",
        "config": {**configs[0], "members": len(members)},
        "data": head.get("data") or {},
        "step": sum(int(m.get("step") or 0) for _, m, _ in members),  # the members' steps together
        "metrics": {},
        "nets": ["rnn"] + (["baseline"] if any(k.startswith("baseline.") for k in weights) else []),
        "mixture": [{"name": name, "step": m.get("step"), "metrics": m.get("metrics") or {},
                     "train_seconds": m.get("train_seconds"), "content_hash": m.get("content_hash")}
                    for name, m, _ in members],
        "partial": False,
    }
    return weights, metadata
