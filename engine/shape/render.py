"""Headless pictures of occupancy grids: a ray-marched, Lambert-shaded view per shape,
and sheets of such views. No display, no OpenGL — a few milliseconds per shape."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_CLAY = np.array([0.82, 0.63, 0.50])
_BACKGROUND = np.array([0.93, 0.93, 0.93])


def _camera(azimuth: float, elevation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, e = np.radians(azimuth), np.radians(elevation)
    forward = -np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return forward, right, np.cross(right, forward)


@torch.no_grad()
def render_grids(grids: np.ndarray, size: int = 128, azimuth: float = -55.0,
                 elevation: float = 25.0, level: float = 0.5) -> np.ndarray:
    """uint8 B×size×size×3 views of B occupancy grids (B×R×R×R, [x, y, z], Z up)."""
    grids = np.asarray(grids, np.float32)
    if grids.ndim == 3:
        grids = grids[None]
    b, res = grids.shape[0], grids.shape[-1]
    forward, right, up = _camera(azimuth, elevation)
    half = 0.9  # the unit cube's half-diagonal is 0.87
    steps = 3 * res
    s = (np.arange(size) + 0.5) / size * 2 - 1
    t = np.linspace(-half, half, steps)
    # Sample points, camera side first along t: (steps, size, size, 3).
    u = s[None, None, :, None] * right            # columns
    v = -s[None, :, None, None] * up               # rows, top row first
    pts = half * (u + v) + t[:, None, None, None] * forward
    coords = torch.from_numpy((pts[..., ::-1] * 2).astype(np.float32).copy())  # grid_sample wants (z, y, x)
    values = F.grid_sample(torch.from_numpy(grids)[:, None], coords[None].expand(b, -1, -1, -1, -1),
                           mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()
    inside = values > level
    hit = inside.any(axis=1)
    first = inside.argmax(axis=1)
    # Refine the hit between the last sample outside and the first inside.
    prev = np.take_along_axis(values, np.maximum(first - 1, 0)[:, None], axis=1)[:, 0]
    cur = np.take_along_axis(values, first[:, None], axis=1)[:, 0]
    frac = np.clip((level - prev) / np.maximum(cur - prev, 1e-6), 0, 1)
    depth = t[first] - (1 - frac) * (t[1] - t[0]) * (first > 0)
    # Normals from the depth map's slope; light from the upper left, over the viewer's shoulder.
    pixel = 2 * half / size
    dz_dr, dz_dc = np.gradient(np.where(hit, depth, depth.max()), pixel, axis=(1, 2))
    normal = np.stack([dz_dc, -dz_dr, -np.ones_like(depth)], -1)  # camera frame (right, up, forward)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    light = np.array([-0.4, 0.6, -0.7])
    light /= np.linalg.norm(light)
    shade = 0.3 + 0.7 * np.clip(normal @ light, 0, 1)
    image = np.where(hit[..., None], shade[..., None] * _CLAY, _BACKGROUND)
    return (image * 255).round().astype(np.uint8)


def sheet(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stack rows of images (each K×H×W×3 uint8) into one uint8 picture, left-aligned."""
    if not rows:
        raise ValueError("sheet needs at least one row of images")
    h, w = rows[0].shape[1:3]
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = gap + i * (h + gap), gap + j * (w + gap)
            out[y:y + h, x:x + w] = img
    return out
