"""Exemplars that repeat: square tiles and a running bond, each tile or brick its own shade."""
import numpy as np


def tiles(size: int = 320, period: float = 40.0, seed: int = 0) -> np.ndarray:
    """Square tiles `period` px apart with 4 px grout, each tile its own shade, plus grain: [size, size, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / period
    shade = rng.uniform(0.45, 0.6, (int(size / period) + 2,) * 2)[yy.astype(int), xx.astype(int)]
    grout = ((yy % 1) * period < 4) | ((xx % 1) * period < 4)
    grey = np.where(grout, 0.95, shade) + 0.05 * rng.standard_normal((size, size))
    return np.repeat(grey[..., None] * 2 - 1, 3, -1).astype(np.float32)


def bond(size: int = 384, course: int = 24, brick: int = 64, seed: int = 0, head: float = 0.9) -> np.ndarray:
    """A running bond: courses of bricks, each course shifted half a brick, 3 px mortar (of shade
    `head` between the bricks of a course), plus grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    row = yy // course
    along = xx + (row % 2) * brick // 2
    shade = rng.uniform(0.35, 0.55, (size // course + 1, size // brick + 2))[row, along // brick]
    grey = np.where(yy % course < 3, 0.9, np.where(along % brick < 3, head, shade))
    grey = grey + 0.05 * rng.standard_normal((size, size))
    return np.repeat(grey[..., None] * 2 - 1, 3, -1).astype(np.float32)
