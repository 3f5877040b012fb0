"""Pictures of training: the loss curve and sample sheets as PNG files."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def loss_curve(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for row in history for k in row if k not in ("step", "seconds")})
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        points = [(row["step"], row[key]) for row in history if key in row]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=key, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss / metric")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
