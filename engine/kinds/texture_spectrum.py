"""Spectral calibration: the exemplar's power at the scales the discriminator never sees.

The discriminator judges ~80 px patches of 96 px crops, so nothing in training shapes the
generator's power at longer wavelengths: on gravel it made 3-9x too little at 85-256 px
(the light and shade that spans several stones), and somewhat too little at 2-3 px (edges).
After training we measure, per radial frequency, the log power of exemplar crops over the
generator's, and generation scales each output's Fourier amplitudes by that ratio, clipped.
The filter depends on frequency alone, so it commutes with tiling: a tiled output's spectrum
lives on the same frequencies, and outputs still wrap exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engine.kinds.texture_eval import power_spectrum
from engine.models.texture_gan import Generator

# At most 10**0.25 = 1.8x amplitude either way: enough for the light and shade, while a full
# correction (up to 3.9x at 256 px) also amplified the 16 px noise-cell grid into blotches.
CLIP = 0.5
SIZE = 256  # measurement size: wavelengths up to 256 px; longer ones get the 256 px gain


@torch.no_grad()
def measure_gain(G: Generator, images: list[np.ndarray], n: int = 16, seed: int = 0) -> list[float]:
    """log10(exemplar power / generator power) at radial frequencies k / (2 * len) cycles per
    pixel, k = 1 .. len, from n random exemplar crops and n samples (clipped to +-CLIP)."""
    side = min(SIZE, *(min(img.shape[:2]) for img in images))
    side -= side % G.cfg.stride
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(2 * n):
        img = images[i % len(images)]
        y, x = rng.integers(0, img.shape[0] - side + 1), rng.integers(0, img.shape[1] - side + 1)
        crops.append(img[y:y + side, x:x + side])
    real = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    which = torch.arange(n, device=device) % max(G.cfg.n_exemplars, 1)
    fake = G(*G.sample_noise(n, side, side, torch.Generator().manual_seed(seed), device), which).float().cpu()
    G.train(was_training)
    gain = (power_spectrum(real) - power_spectrum(fake)).clamp(-CLIP, CLIP)
    return [round(float(g), 4) for g in gain]


def apply_gain(x: torch.Tensor, gain: Sequence[float]) -> torch.Tensor:
    """Images [B, C, H, W] in [-1, 1] with each frequency's power scaled by 10**gain (the mean kept)."""
    h, w = x.shape[-2:]
    freq = (torch.fft.fftfreq(h, dtype=torch.float64)[:, None] ** 2
            + torch.fft.rfftfreq(w, dtype=torch.float64)[None] ** 2).sqrt()
    table = torch.as_tensor(gain, dtype=torch.float64)
    bins = torch.arange(1, len(table) + 1, dtype=torch.float64) / (2 * len(table))
    log_power = np.interp(freq.numpy(), bins.numpy(), table.numpy())  # constant beyond both ends
    amplitude = torch.from_numpy(10 ** (log_power / 2)).to(x.device, torch.float32)
    amplitude[0, 0] = 1.0
    spectrum = torch.fft.rfft2(x.float()) * amplitude
    return torch.fft.irfft2(spectrum, s=(h, w)).clamp(-1, 1).to(x.dtype)
