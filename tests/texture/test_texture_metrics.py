"""The lattice measure and the element-shape measure of engine.texture.evaluation (issue 19, point 5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.texture.evaluation import element_distance, lattice, lattice_ratios, reference_ratios
from engine.texture.generation import to_uint8
from engine.texture.images import ImageCrops, load_images

BARK = Path(__file__).resolve().parents[2] / "bench" / "data" / "textures" / "bark" / "bark_Color.jpg"


def noise(n: int = 4, size: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def dots(n: int, size: int, radius: float, count: int, seed: int) -> np.ndarray:
    """Light discs at random places on a dark ground, wrapping around the borders; uint8 [n, size, size, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.full((n, size, size, 1), 40, np.uint8)
    for i in range(n):
        for cy, cx in rng.uniform(0, size, (count, 2)):
            dy, dx = (yy - cy + size / 2) % size - size / 2, (xx - cx + size / 2) % size - size / 2
            out[i, dy ** 2 + dx ** 2 <= radius ** 2, 0] = 210
    return out


def test_white_noise_has_no_lattice():
    ratios = lattice_ratios(noise())
    assert set(ratios) == {4, 8, 16}
    assert all(abs(r - 1) < 0.05 for r in ratios.values()), ratios
    assert abs(lattice(noise(seed=1)) - 1) < 0.05


def test_a_planted_lattice_reads_far_from_one():
    x = noise().astype(np.float32)
    x[:, 8::8, :] = np.clip(x[:, 8::8, :] * 1.6 - 60, 0, 255)  # every 8th row and column: stronger contrast
    x[:, :, 8::8] = np.clip(x[:, :, 8::8] * 1.6 - 60, 0, 255)
    planted = x.astype(np.uint8)
    assert lattice_ratios(planted)[8] > 1.2
    assert lattice(planted) > 1.2
    # the lattice: gradients lower on the lines (smoothed rows and columns), read as < 1
    soft = noise().astype(np.float32)
    for axis in (1, 2):
        idx = [slice(None)] * 4
        idx[axis] = slice(4, None, 8)
        prev = [slice(None)] * 4
        prev[axis] = slice(3, -1, 8)
        soft[tuple(idx)] = 0.7 * soft[tuple(prev)] + 0.3 * soft[tuple(idx)]
    assert lattice(soft.astype(np.uint8)) < 0.8


def test_element_distance_sees_grown_and_merged_elements():
    real = dots(6, 128, 4, 40, seed=0)
    same = dots(6, 128, 4, 40, seed=1)
    merged = dots(6, 128, 7, 22, seed=2)  # bigger discs that touch and merge, at 1.6x the cover (as in issue 19)
    baseline = element_distance(dots(6, 128, 4, 40, seed=3), real)
    assert element_distance(same, real) < 2 * baseline + 0.2
    assert element_distance(merged, real) > 4 * max(baseline, 0.1)


def test_the_photos_own_crops_read_as_the_photo_however_the_reference_sets_fall():
    """Bark's photo is grey bark on the left and brown on the right. A reference set's crops can land
    alike in both halves, and its small yardstick inflated that set's ratio: a ratio per set averaged
    over four sets, as `atelier eval` took them, read the photo's own crops at 1.08 and 2.35 at these
    seeds ("off" for the photo itself; 1.68 at the second over eight); the distances summed over
    eight sets read 0.66 and 1.25 (crops of the whole photo, the reference's half among them, read
    below 1: the suite's floor row is 0.5-0.7)."""
    images, _ = load_images(BARK, channels=3)
    for seed in range(2):
        crops = to_uint8(ImageCrops(images, 96, flips=False, rot90=False, fair_edges=True, seed=seed + 50)
                         .batch(np.arange(32)))
        ratios = reference_ratios(crops, images, seed * 8, repeats=8)
        assert ratios["gram"] < 1.5, (seed, ratios)
