"""A terminal progress bar that takes the engine's progress events."""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class ProgressBar:
    def __init__(self, title: str):
        self._bar = tqdm(total=1000, desc=title, file=sys.stderr, leave=True, dynamic_ncols=True,
                         bar_format="{desc} |{bar}| {percentage:3.0f}% {elapsed}<{remaining}{postfix}")

    def __call__(self, fraction: float, message: str, preview: Any = None) -> None:
        self._bar.n = int(round(fraction * 1000))
        self._bar.set_postfix_str(message[:80], refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
