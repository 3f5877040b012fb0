"""Texture metrics: real-vs-real near 1, noise far above, seams measured, judging sheet written."""
import dataclasses

import numpy as np
import pytest
import torch

from engine.texture.evaluation import (evaluate_model, judging_sheet_image, radial_power, real_sets, seam_ratio,
                                       texture_metrics)
from engine.texture.generation import load
from engine.texture.images import exemplar, procedural
from engine.texture.model import TextureGANConfig
from engine.texture.objective import TextureObjective


@pytest.fixture(scope="module")
def gravel():
    return [exemplar("gravel")]


def test_real_vs_real_is_near_one_and_noise_is_far(gravel):
    _, held_out = real_sets(gravel, 64, 12, seed=5)  # other crops of the held-out half
    real = texture_metrics(held_out, gravel)
    for key in ("gram", "swd", "spectrum", "diversity", "nearest_patch"):
        assert 0.5 < real[key] < 2.0, (key, real[key])
    noise = texture_metrics(torch.rand(12, 1, 64, 64) * 2 - 1, gravel)
    for key in ("gram", "swd", "spectrum"):
        assert noise[key] > 3.0, (key, noise[key])
    collapsed = texture_metrics(held_out[:1].repeat(12, 1, 1, 1), gravel)
    assert collapsed["diversity"] < 0.05


def test_either_half_can_be_the_reference(gravel):
    first, second = real_sets(gravel, 64, 6, seed=1)
    swapped = real_sets(gravel, 64, 6, seed=1, swap=True)
    assert torch.equal(swapped[0], second) and torch.equal(swapped[1], first)
    # crops of the first half are measured against the first half, then the second: each time
    # the other half's crops are the baseline, so the two ratios differ
    mine = real_sets(gravel, 64, 6, seed=7)[0]
    assert texture_metrics(mine, gravel, swap=True) != texture_metrics(mine, gravel)


@pytest.mark.parametrize("h, w", [(32, 32), (33, 31), (40, 27), (31, 64)])
def test_radial_power_from_the_half_plane_is_the_whole_planes(h, w):
    """radial_power bins the half plane rfft2 keeps, its mirrored columns weighted twice: the
    same radial means as binning every frequency of the full spectrum, for even and odd sides."""
    x = torch.nn.functional.avg_pool2d(torch.rand(3, 2, h, w, generator=torch.Generator().manual_seed(h)), 3, 1, 1)
    win = torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)[None]
    full = torch.fft.fft2((x - x.mean((2, 3), keepdim=True)) * win).abs().pow(2).mean(0)  # [C, H, W]
    ky, kx = torch.fft.fftfreq(h, 1 / h), torch.fft.fftfreq(w, 1 / w)
    r = (ky[:, None] ** 2 + kx[None] ** 2).sqrt().round().long().clamp(max=min(h, w) // 2).flatten()
    sums = torch.zeros(2, min(h, w) // 2 + 1).index_add_(1, r, full.flatten(1))
    counts = torch.zeros(min(h, w) // 2 + 1).index_add_(0, r, torch.ones(r.numel()))
    expected = (sums / counts)[:, 1:]
    assert torch.allclose(radial_power(x), expected, rtol=1e-4)


def test_seam_ratio():
    periodic = np.round((procedural("blobs", 64, seed=2) + 1) * 127.5).astype(np.uint8)[None]  # wraps
    assert abs(seam_ratio(periodic) - 1) < 0.2
    assert seam_ratio(np.roll(periodic, (20, 30), (1, 2))[:, :40, :40]) > 2  # a cut-out does not wrap
    ramp = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, None, :, None] * 3, (2, 64, 64, 1))
    assert seam_ratio(ramp) > 20


def test_evaluate_model_and_sheet(gravel, tmp_path):
    cfg = TextureGANConfig(channels=1, g_width=8, g_max_width=32, d_width=8, d_max_width=32, d_layers=3,
                           crop=32, g_blocks=3, n_local=4, n_global=8, n_periodic=2)
    obj = TextureObjective(cfg, gravel)
    weights = {f"G_ema.{k}": v for k, v in obj.nets["G_ema"].state_dict().items()}
    model = load(dataclasses.asdict(cfg), weights)
    metrics = evaluate_model(model, gravel, size=32, n=4)
    assert metrics["tile_error"] < 1e-5 and metrics["seam_ratio"] < 1.5  # see test_texture_ops
    assert metrics["gram"] > 1.5  # an untrained generator is far from gravel
    sheet = judging_sheet_image(model, gravel, size=64)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3 and sheet.shape[1] >= 4 * 64
