"""The JSB chorales benchmark split (Boulanger-Lewandowski et al. 2012), read by path.

For tests and benchmarks only; the product never needs it. Each chorale becomes a
Piece without onset marks (the files do not tell held notes from repeated ones).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from engine.music.piece import Piece, roll_from_steps

FILES = {"quarter": ("jsb-chorales-quarter.json", 1), "16th": ("jsb-chorales-16th.json", 4)}
SPLITS = ("train", "valid", "test")


JSB_DIR_VARIABLE = "ATELIER_JSB_DIR"


def jsb_dir() -> Path | None:
    """The folder $ATELIER_JSB_DIR names, if set: where tests and benchmarks find the split."""
    value = os.environ.get(JSB_DIR_VARIABLE)
    return Path(value) if value else None


def load_jsb(root: str | Path, resolution: str = "quarter") -> dict[str, list[Piece]]:
    """{"train"|"valid"|"test": [Piece, ...]} from the JSON files in `root`."""
    if resolution not in FILES:
        raise ValueError(f"unknown JSB resolution {resolution!r}; use one of {sorted(FILES)}")
    name, steps_per_quarter = FILES[resolution]
    path = Path(root) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pass the folder holding the JSB split "
            f"(jsb-chorales-quarter.json, jsb-chorales-16th.json), or set ATELIER_JSB_DIR")
    data = json.loads(path.read_text())
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise ValueError(f"{path} lacks the split(s) {missing}; expected keys {list(SPLITS)}")
    return {
        split: [Piece(f"jsb-{split}-{i:03d}", roll_from_steps(steps), steps_per_quarter,
                      4 * steps_per_quarter, 0, has_onsets=False)
                for i, steps in enumerate(data[split])]
        for split in SPLITS
    }
