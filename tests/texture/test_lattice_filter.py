"""The calibration's lattice filter (engine/texture/lattice.py): fitted on pictures with a grid, it
takes the grid out; on pictures without one it does next to nothing; it keeps exact tiling."""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from engine.texture.evaluation import lattice, lattice_ratios
from engine.texture.lattice import apply_lattice_filter, fit_lattice_filter

STRIDE = 16


def smooth_noise(n: int, seed: int, channels: int = 3, size: int = 128) -> torch.Tensor:
    """[n, channels, size, size] in about [-0.6, 0.6]: white noise blurred by 1 px, wrapping (it tiles)."""
    x = np.random.default_rng(seed).normal(size=(n, channels, size, size))
    return torch.from_numpy(gaussian_filter(x, (0, 0, 1, 1), mode="wrap") * 1.2).float()


def with_grid(x: torch.Tensor) -> torch.Tensor:
    """x with the generator's kind of lattice planted: the gaps before every 4th pixel softened, and
    those before every 16th more (a pixel there blended with the one before it), and every other
    gap a little weaker than its neighbours (the period-2 pattern of the ground material)."""
    x = x.clone()
    for dim in (-1, -2):
        for step, keep in ((4, 0.85), (STRIDE, 0.85)):
            at = torch.arange(0, x.shape[dim], step)
            x.index_copy_(dim, at, keep * x.index_select(dim, at) + (1 - keep) * x.index_select(dim, (at - 1) % x.shape[dim]))
        odd = torch.arange(1, x.shape[dim], 2)
        x.index_copy_(dim, odd, 0.95 * x.index_select(dim, odd) + 0.05 * x.index_select(dim, odd - 1))
    return x


def test_a_planted_grid_is_taken_out_and_the_taps_have_mean_zero():
    seen, unseen = with_grid(smooth_noise(24, seed=0)), with_grid(smooth_noise(24, seed=1))
    assert lattice(unseen) < 0.8
    taps = fit_lattice_filter(seen, [slice(0, 3)], STRIDE)
    assert np.asarray(taps).shape == (2, 3, STRIDE, 2)
    assert np.abs(np.asarray(taps).mean(2)).max() < 1e-3  # no overall sharpening or blurring
    ratios = lattice_ratios(apply_lattice_filter(unseen, taps))  # measured on pictures it was not fitted on
    assert all(abs(r - 1) < 0.03 for r in ratios.values()), ratios


def test_each_map_gets_its_own_taps():
    colour, height = smooth_noise(24, seed=2), smooth_noise(24, seed=3, channels=1)
    stack = torch.cat([with_grid(colour), height], 1)  # a grid in the colour, none in the height map
    taps = np.asarray(fit_lattice_filter(stack, [slice(0, 3), slice(3, 4)], STRIDE))
    assert (taps[:, 0] == taps[:, 2]).all()  # a map's channels share them
    assert np.abs(taps[:, :3]).max() > 0.05 and np.abs(taps[:, 3]).max() < 0.02


def test_pictures_without_a_grid_are_left_almost_as_they_are():
    x = smooth_noise(24, seed=4)
    taps = fit_lattice_filter(x, [slice(0, 3)], STRIDE)
    assert np.abs(np.asarray(taps)).max() < 0.02
    assert (apply_lattice_filter(x, taps) - x).abs().max() < 0.05


def test_the_filter_keeps_tiling_exact_and_a_flat_picture_flat():
    taps = fit_lattice_filter(with_grid(smooth_noise(8, seed=5, size=64)), [slice(0, 3)], STRIDE)
    x = with_grid(smooth_noise(1, seed=6, size=64))
    tiled = apply_lattice_filter(x.repeat(1, 1, 2, 3), taps)
    assert (tiled - apply_lattice_filter(x, taps).repeat(1, 1, 2, 3)).abs().max() < 1e-6
    flat = torch.full((1, 3, 32, 48), 0.3)
    assert (apply_lattice_filter(flat, taps) - 0.3).abs().max() < 1e-6
