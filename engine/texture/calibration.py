"""Calibration: the exemplar's statistics where the discriminator could not teach them.

The discriminator judges patches of its training crops (~80 px; ~160 px at its second scale),
so nothing in training shapes the generator's power at longer wavelengths: on gravel (one scale,
96 px crops) it made 3-9x too little at 85-256 px (the
light and shade across several stones), somewhat too little at 2-3 px (edges), and its grey
levels drift from the photo's. Nor does it see a whole picture, so the global code is free to
make one seed's picture darker or flatter than the photo anywhere is. After training we
measure six corrections against exemplar crops, store them in the model's config, and apply
them to every output, in this order:

1. `image_moments`: the tone each picture's global code gives it (its mean and standard
   deviation per channel at the measurement size, `code_moments`) moved towards the
   generator's average, before anything else. The deviation is matched; of the mean's offset
   a measured fraction stays, so that seeds vary in brightness as much as the photo's own
   crops do (gravel: the raw generator's seeds varied 1.7x as much, so that one picture could
   be as dark everywhere as the photo's darkest corner; matched in full, they varied 0.3x).
   A picture larger than the measurement size keeps less, in proportion to its side: a photo's
   mean over a region four times as wide varies about a quarter as much, and a 1024^2 picture
   that kept a 256^2 crop's offset was darker or lighter all over than any region of the photo
   (rock's worst seed at 512^2: 4.35 Gram ratio).
2. `spectrum_gain`: each channel's Fourier amplitude at each radial frequency scaled by the
   measured log10(exemplar power / generator power), a boost clipped to BOOST: a full one (up
   to 3.9x at 256 px) also blew the 16 px noise-cell grid up into blotches. Clipped at 1.8x
   (before 2026-12-07), grass's gain sat at the clip from 4 to 32 px and its spectrum ratio
   read 2.71; at 3.2x, 1.51, with no lattice (docs/BENCHMARKS.md, "The gain's reach"). A cut goes down to
   CUT: a PBR set's height map is far smoother than its colour (bricks: 10**-3 of the power the
   generator made at 3-6 px), and one gain for every channel, as models before 2026-12-04 have,
   left it rough (height spectrum ratio 13.4).
   `orientation_gain`, with it where training turned the crops (a photo without a direction or a
   repeat) and keeps the photo's shapes (`_turned_texture`): each direction's power (8, 22.5
   degrees apart) at each frequency taken to the photo's, beyond its radius' gain, at wavelengths
   up to ORIENTED_WAVE. Shown turned crops, the generator still drew a direction of its own:
   sand's pictures had 2-3x the photo's fine power one way and half the other, a level grain
   (elements ratio 2.11 -> 1.81), grass a slanted one. Where the photo has a direction, the
   generator draws it with its structure, and the gain amplified whatever it drew: on planks it
   made slanted blotches pass as grain.
3. `colour_mix`: a colour model's three colour channels mixed by a 3x3 matrix per radial
   frequency, which takes how they move together at that frequency to the exemplar's: the
   gain matches each channel's power alone, and the pictures' fine detail was up to 10x as
   colourful as the photo's (`measure_colour_mix`).
4. `field_gain`: the long-wavelength power the clip leaves out, added as a smooth random field
   made from the model's own first local-noise channel, band-limited below the noise cells'
   Nyquist frequency (so it has no cell grid), and thus moving with seeds, morphs and
   animations like the rest of the picture.
   `cell_tint`, before it where the exemplar repeats in two directions: an offset per tile or
   brick, as the photo's vary, and the joints shaded as the photo's are on average
   (engine/texture/tints.py); the field then adds what is still missing below the repeat's
   frequency (above it the photo's power is its joints').
5. `tone_curve`: a monotone map per channel that gives the outputs the exemplar's histogram
   (as Heeger & Bergen 1995 do after each pyramid pass).
6. `lattice_filter`: a 3-tap filter along each axis whose taps depend on a pixel's position in
   its noise cell, flattening the generator's 4/8/16-px lattice (engine/texture/lattice.py).

Each step depends on frequency, on the noise grid, on the global code or on the pixel value
alone, so outputs still tile exactly: the calibrated picture of a tiled noise tensor is the
tiled picture (up to SIZE^2: above it the kept tone shrinks with the picture's size).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from engine.texture.evaluation import oriented_power, radial_cross_power, radial_power, real_sets
from engine.texture.images import ImageCrops, has_direction
from engine.texture.lattice import apply_lattice_filter, fit_lattice_filter
from engine.texture.model import Generator, TextureGANConfig
from engine.texture.repeats import LONG_WAVE_SHARE, long_wave_share
from engine.texture.tints import (BINS, aligned, best_shift, cell_means, cell_offsets, exemplar_phases, find_cells, fold,
                                  joint_shades, picture_phases, tint, tint_layout)

BOOST = 1.0  # log10 power: at most 10**0.5 = 3.2x amplitude up from the gain
CUT = -4.0  # and at most 100x amplitude down
ORIENTATIONS = 8  # directions the gain is measured in, 22.5 degrees apart (`orientation_gain`)
ORIENTED_WAVE = 64  # px: the direction's gain in full at this wavelength and shorter, none from twice it
ORIENTED_REACH = 1.0  # log10 power a direction's gain moves from its radius's: at most 3.2x amplitude
SIZE = 256  # measurement size: wavelengths up to 256 px; longer ones get the 256 px values
LARGE_SIZE = 512  # the measurement size for a large photo of large shapes (`measurement_size`)
TINT_SIZE, TINT_PICTURES = 1024, 4  # pictures whose tiles' means are compared with the exemplar's
TONE_LEVELS = 257  # tone curve samples, evenly spaced over [-1, 1]
FIELD_PASSES = 3  # the field's power is set, measured on the result, and set again
BORDER_DRAWS = 4  # crop draws `calibration_crops` compares the photo's border with its middle over
ROUNDS = 3  # gain, field and curve measured again after the curve, which changes the spectrum
# Samples the lattice filter is fitted on: each gap's mean log gradient energy over 64 pictures at
# 256² is stable to ~1 %, and the fit takes ~1 s per map and axis.
LATTICE_PICTURES = 64


def _radial_table(freq: torch.Tensor, table: Sequence[float], beyond: float | None = None) -> torch.Tensor:
    """A per-frequency table (values at k / (2 * len) cycles per pixel, k = 1 .. len, len >= 2)
    read at `freq` by linear interpolation, on freq's device; constant below the first entry
    and, unless `beyond` is given, above the last."""
    values = torch.as_tensor(table, dtype=freq.dtype, device=freq.device)
    pos = freq * (2 * len(values)) - 1  # fractional index into values
    i = pos.floor().clamp(0, len(values) - 2)
    t = (pos - i).clamp(0, 1)
    out = torch.lerp(values[i.long()], values[i.long() + 1], t)
    return out if beyond is None else torch.where(pos > len(values) - 1, beyond, out)


def _oriented_tables(freq: torch.Tensor, angle: torch.Tensor, tables: Sequence[Sequence[Sequence[float]]]
                     ) -> torch.Tensor:
    """Per-direction, per-frequency tables [C][A][K] (`orientation_gain`'s: directions a * 180 / A
    degrees) read at `freq` and `angle` (radians, modulo pi) by linear interpolation in both:
    [C, *freq.shape]."""
    values = torch.as_tensor(tables, dtype=freq.dtype, device=freq.device)
    channels, directions, radii = values.shape
    pos = freq * (2 * radii) - 1
    i = pos.floor().clamp(0, radii - 2)
    t = (pos - i).clamp(0, 1)
    at = angle % math.pi / (math.pi / directions)
    a0 = at.floor()
    u = at - a0
    a0 = a0.long() % directions
    flat = values.view(channels, -1)
    first, second = (a0 * radii + i.long()).flatten(), ((a0 + 1) % directions * radii + i.long()).flatten()
    read = lambda at: flat.index_select(1, at).view(channels, *freq.shape)  # noqa: E731
    return torch.lerp(torch.lerp(read(first), read(first + 1), t), torch.lerp(read(second), read(second + 1), t), u)


def _rfft_radius(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Radial frequency (cycles per sample) of each coefficient of an h x w rfft2."""
    return (torch.fft.fftfreq(h, device=device)[:, None] ** 2 + torch.fft.rfftfreq(w, device=device)[None] ** 2).sqrt()


_AMPLITUDES: dict[tuple, torch.Tensor] = {}  # the `_gain_amplitude`s used last, the latest last
# Bytes of them kept: a 2048^2 set's five channel groups (76 MB) and smaller pictures'. A count of
# four entries was emptied by the five groups of every 2048^2 set in turn, each rebuilt each time.
AMPLITUDE_BYTES = 128 << 20


def _gain_amplitude(h: int, w: int, gain: tuple[tuple[float, ...], ...], device: torch.device,
                    check: Callable[[], None] | None = None, oriented: tuple | None = None) -> torch.Tensor:
    """The amplitude scale [len(gain), h, w // 2 + 1] of each h x w rfft2 coefficient, a table per
    channel (or one for all), with each channel's `oriented` table [A][K] added to its log gain;
    cached because building it took as long as the two FFTs (10 ms at 1024^2), and a model is
    asked for the same sizes again. With `check`, built a band of rows at a time, calling it
    between bands."""
    key = (h, w, gain, device, oriented)
    if key in _AMPLITUDES:
        _AMPLITUDES[key] = _AMPLITUDES.pop(key)  # the latest last: the oldest go first
    else:
        with torch.inference_mode(False):  # an ordinary tensor, usable in and out of inference mode
            fy, fx = torch.fft.fftfreq(h, device=device)[:, None], torch.fft.rfftfreq(w, device=device)[None]
            channels = len(oriented) if oriented else len(gain)
            pieces = []
            for band in fy.split(max(1, CHUNK // w) if check else h):
                freq = (band ** 2 + fx ** 2).sqrt()
                log_gain = torch.stack([_radial_table(freq, gain[c if len(gain) > 1 else 0]) for c in range(channels)])
                if oriented:
                    log_gain = (log_gain + _oriented_tables(freq, torch.atan2(band, fx), oriented)).clamp(CUT, BOOST)
                pieces.append(_checked(10 ** (log_gain / 2), check))
            amplitude = torch.cat(pieces, 1)
            amplitude[:, 0, 0] = 1.0
        _AMPLITUDES[key] = amplitude
        while len(_AMPLITUDES) > 1 and sum(a.nbytes for a in _AMPLITUDES.values()) > AMPLITUDE_BYTES:
            _AMPLITUDES.pop(next(iter(_AMPLITUDES)))
    return _AMPLITUDES[key]


def gain_rows(gain: Sequence[float] | Sequence[Sequence[float]], channels: slice = slice(None)
              ) -> tuple[tuple[float, ...], ...]:
    """A stored spectrum gain as one row per channel (of `channels`), or as the one row that
    models saved before per-channel gains apply to every channel."""
    if isinstance(gain[0], (int, float)):
        return (tuple(gain),)
    return tuple(tuple(row) for row in list(gain)[channels])


CHUNK = 1 << 20  # values per piece of a 2-D FFT (or of a pointwise step) done in pieces


def _rfft2(x: torch.Tensor, check: Callable[[], None] | None) -> torch.Tensor:
    """torch.fft.rfft2(x), or with `check` the same in pieces of rows, then of columns, calling
    check() between them (a 4096^2 FFT takes about a second on 2 CPU cores)."""
    if check is None:
        return torch.fft.rfft2(x)
    h, w = x.shape[-2:]
    rows = torch.cat([_checked(torch.fft.rfft(part, dim=-1), check) for part in x.split(max(1, CHUNK // w), -2)], -2)
    return torch.cat([_checked(torch.fft.fft(part, dim=-2), check) for part in rows.split(max(1, CHUNK // h), -1)], -1)


def _irfft2(spectrum: torch.Tensor, size: tuple[int, int], check: Callable[[], None] | None) -> torch.Tensor:
    """torch.fft.irfft2(spectrum, s=size), in pieces with `check` as `_rfft2`."""
    if check is None:
        return torch.fft.irfft2(spectrum, s=size)
    h, w = size
    cols = torch.cat([_checked(torch.fft.ifft(part, dim=-2), check)
                      for part in spectrum.split(max(1, CHUNK // h), -1)], -1)
    return torch.cat([_checked(torch.fft.irfft(part, n=w, dim=-1), check) for part in cols.split(max(1, CHUNK // w), -2)],
                     -2)


def _checked(x: torch.Tensor, check: Callable[[], None] | None) -> torch.Tensor:
    if check:
        check()
    return x


def apply_gain(x: torch.Tensor, gain: Sequence[float] | Sequence[Sequence[float]],
               check: Callable[[], None] | None = None, oriented: Sequence | None = None) -> torch.Tensor:
    """Images [B, C, H, W] in [-1, 1] with each frequency's power scaled by 10**gain, one table for
    every channel or one per channel (the mean kept), and by each channel's `oriented` table
    (`orientation_gain`); `check` as in `_rfft2`."""
    spectrum = _gained_spectrum(x, gain_rows(gain), check, oriented and _frozen(oriented))
    return _irfft2(spectrum, x.shape[-2:], check).clamp_(-1, 1).to(x.dtype)


def _frozen(oriented: Sequence[Sequence[Sequence[float]]]) -> tuple:
    """An `orientation_gain` as nested tuples (a cache key)."""
    return tuple(tuple(tuple(row) for row in channel) for channel in oriented)


def _gained_spectrum(x: torch.Tensor, rows: tuple[tuple[float, ...], ...] | None,
                     check: Callable[[], None] | None, oriented: tuple | None = None) -> torch.Tensor:
    """rfft2 of x with each frequency's amplitude scaled by the gain's `rows` and `oriented`
    tables (None: unscaled)."""
    spectrum = _rfft2(x.float(), check)
    if rows:  # scaled in place as real pairs: a complex tensor times a real one first makes the
        # real one complex (twice the passes), and gives the same numbers
        amplitude = _gain_amplitude(*x.shape[-2:], rows, x.device, check, oriented)
        torch.view_as_real(spectrum).mul_(amplitude[..., None])
    return spectrum


_MIXES: dict[tuple, torch.Tensor] = {}  # the last `_mix_tables` of a whole picture


def _mix_tables(h: int, w: int, mix: tuple[tuple[float, ...], ...], device: torch.device,
                rows: slice = slice(None)) -> torch.Tensor:
    """The colour mix's matrix [3, 3, rows, w // 2 + 1, 2] at each of the `rows` of an h x w rfft2,
    repeated for the real and imaginary parts (multiplying by a table broadcast over them took 3x
    as long); the identity at the mean."""
    freq = _rfft_radius(h, w, device)[rows]
    tables = torch.stack([_radial_table(freq, [row[k] for row in mix]) for k in range(9)])
    if freq[0, 0] == 0:
        tables[:, 0, 0] = torch.eye(3).flatten()
    return tables.view(3, 3, *freq.shape, 1).expand(-1, -1, -1, -1, 2).contiguous()


def _mix_colour(spectrum: torch.Tensor, mix: Sequence[Sequence[float]], size: tuple[int, int], colour: slice,
                check: Callable[[], None] | None) -> None:
    """Mix the `colour` channels of an rfft2 `spectrum` [B, C, h, w // 2 + 1] of h x w pictures in
    place by each frequency's 3x3 matrix (`colour_mix`), a band of rows at a time. A whole
    picture's tables are kept for the next picture of its size; a large one's (`check`) are
    made band by band."""
    part = torch.view_as_real(spectrum[:, colour])  # [B, 3, h, w // 2 + 1, 2]
    key = (*size, tuple(map(tuple, mix)), spectrum.device)
    if check is None and key not in _MIXES:
        _MIXES.clear()
        with torch.inference_mode(False):
            _MIXES[key] = _mix_tables(*key)
    step = max(1, CHUNK // part.shape[-2])
    for top in range(0, size[0], step):
        rows = slice(top, top + step)
        t = _MIXES[key][:, :, rows] if check is None else _mix_tables(*key, rows)
        s0, s1, s2 = part[:, 0, rows], part[:, 1, rows], part[:, 2, rows]
        first = (s0 * t[0, 0]).addcmul_(s1, t[0, 1]).addcmul_(s2, t[0, 2])
        second = (s0 * t[1, 0]).addcmul_(s1, t[1, 1]).addcmul_(s2, t[1, 2])
        s2.mul_(t[2, 2]).addcmul_(s0, t[2, 0]).addcmul_(s1, t[2, 1])
        s0.copy_(first)
        s1.copy_(second)
        if check:
            check()


def apply_colour_mix(x: torch.Tensor, mix: Sequence[Sequence[float]]) -> torch.Tensor:
    """Images [B, 3, H, W] with their colour mixed by `mix` (`_mix_colour`), clamped to [-1, 1]."""
    spectrum = torch.fft.rfft2(x.float())
    _mix_colour(spectrum, mix, x.shape[-2:], slice(0, 3), None)
    return torch.fft.irfft2(spectrum, s=x.shape[-2:]).clamp_(-1, 1).to(x.dtype)


def measure_colour_mix(fake: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    """`colour_mix` [K, 9]: per radial frequency, the linear map of the colour channels that takes
    the fakes' cross-power [N, 3, H, W] to the real crops' and moves them least (the
    Monge-Kantorovich linear map of colour transfer, Pitie & Kokaram 2007), its gains clipped to
    CUT..1. Each channel's power alone is what the gain matches; this matches how the channels
    move together: the pictures' fine detail was up to 10x as colourful as the photo's (red-green
    specks on marble, fringes along tiles' joints; docs/BENCHMARKS.md, "Colour mix"). It only
    cuts: allowed to boost as the gain does, it boosted on top of the gain's clip, and marble
    grew a grain."""
    out = []
    for f, r in zip(radial_cross_power(fake).double().numpy(), radial_cross_power(real).double().numpy()):
        root = _sqrtm(f)
        inverse = np.linalg.pinv(root)
        mix = inverse @ _sqrtm(root @ r @ root) @ inverse
        w, v = np.linalg.eigh((mix + mix.T) / 2)
        out.append(((v * np.clip(w, 10 ** (CUT / 2), 1.0)) @ v.T).ravel())
    return np.stack(out)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """The square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.maximum(w, 0))) @ v.T


def field_spectrum(z: torch.Tensor, amplitude: Sequence[Sequence[float]], stride: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rfft2 coefficients [B, C, h, w//2+1] of `noise_field` (of an H x W = stride x (h x w)
    picture, scaled to its transform) and the rows of the H x (W//2+1) spectrum they go to: the
    field's only non-zero ones, as it is band-limited below the cells' Nyquist frequency."""
    b, _, h, w = z.shape
    freq = _rfft_radius(h, w, z.device) / stride  # in cycles per output pixel
    passed = (freq > 0) & (freq < 0.5 / stride)
    scale = torch.stack([_radial_table(freq, a, beyond=0.0) * passed for a in amplitude]) * stride ** 2
    k = torch.arange(h, device=z.device)
    return torch.fft.rfft2(z[:, :1].float()) * scale, torch.where(k <= h // 2, k, h * stride - h + k)


def noise_field(z: torch.Tensor, amplitude: Sequence[Sequence[float]], stride: int,
                check: Callable[[], None] | None = None) -> torch.Tensor:
    """A smooth field [B, C, H, W] (H, W = stride x the grid of z [B, n, h, w]) from the noise's
    first channel: its band-limited interpolation (amplitude 1 keeps the cells' values) with each
    radial frequency scaled by `amplitude[c]`, zero at the mean and from the cells' Nyquist
    frequency up. Its coefficients are placed straight into the output's spectrum, so a tiled
    noise tensor gives the tiled field."""
    b, _, h, w = z.shape
    height, width = h * stride, w * stride
    coeffs, rows = field_spectrum(z, amplitude, stride)
    if check is None:  # columns past w // 2 are zero: transform only the others along the height
        cols = coeffs.new_zeros(b, len(amplitude), height, w // 2 + 1)
        cols[:, :, rows] = coeffs
        cols = torch.fft.ifft(cols, dim=-2)
        spectrum = torch.cat([cols, cols.new_zeros(cols.shape[:-1] + (width // 2 - w // 2,))], -1)
        return torch.fft.irfft(spectrum, n=width, dim=-1)
    spectrum = coeffs.new_zeros(b, len(amplitude), height, width // 2 + 1)
    spectrum[:, :, rows, : w // 2 + 1] = coeffs
    return _irfft2(spectrum, (height, width), check)


def apply_tone(x: torch.Tensor, curve: Sequence[Sequence[float]]) -> torch.Tensor:
    """Each channel c of x [B, C, H, W] in [-1, 1] through the piecewise-linear map whose values
    at evenly spaced levels over [-1, 1] are curve[c]."""
    table = torch.as_tensor(np.asarray(curve), dtype=torch.float32, device=x.device)
    channels, levels = table.shape
    slope = torch.cat([table.diff(dim=1), table.new_zeros(channels, 1)], 1)
    pos = (x.float().clamp(-1, 1) + 1) * ((levels - 1) / 2)
    i = pos.to(torch.int32).clamp_(max=levels - 2)  # pos >= 0: truncation is the floor
    t = pos.sub_(i)
    # indices into the flattened tables, channel c's at c * levels: all channels in one gather
    # each; int32 indices and value + slope * t: 1.6x faster than int64 `take`s and a lerp
    i = i.add_(torch.arange(channels, dtype=torch.int32, device=x.device).view(1, -1, 1, 1) * levels).flatten()
    value = table.flatten().index_select(0, i).view_as(t)
    return value.addcmul_(slope.flatten().index_select(0, i).view_as(t), t).to(x.dtype)


def image_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's mean and standard deviation per channel, [B, C, 1, 1] each; the population
    deviation, which a tiled image shares exactly."""
    return x.mean((2, 3), keepdim=True), x.std((2, 3), correction=0, keepdim=True)


@torch.no_grad()
def code_moments(G: Generator, z_global: torch.Tensor, phase: torch.Tensor,
                 exemplar: torch.Tensor | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw moments (`image_moments`) of what G makes of these global codes [B, G] and wave
    phases [B, P] at the measurement size, with fixed local noise: the tone the code gives a
    picture of any size. A picture's own moments would do for large ones, but a small one
    (the crop-sized pictures the eval op judges) varies in tone by nature, as small crops of the photo do."""
    lattice = G.cfg.crop // G.cfg.stride  # a whole number of training lattices: the same waves
    cells = lattice * -(-SIZE // (G.cfg.stride * lattice))
    local = torch.randn(1, G.cfg.n_local + G.cfg.scale_noise_channels, cells, cells,  # per-scale noise packed
                        generator=torch.Generator().manual_seed(0))
    z = G.noise(local.to(z_global.device).expand(len(z_global), -1, -1, -1), z_global, phase, exemplar,
                exact_repeat=True)
    return image_moments(torch.cat([G.synthesize(part) for part in z.split(32)]))


def moments_affine(moments: tuple[torch.Tensor, torch.Tensor], target: Sequence[Sequence[float]], dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`match_moments` (before its clamp) as x * scale + offset: (scale, offset), moments' shape."""
    goal = torch.as_tensor(np.asarray(target), dtype=dtype, device=moments[0].device).T[..., None, None]
    mean, std = moments
    scale = goal[1] / std.clamp_min(1e-4)
    return scale, torch.lerp(goal[0], mean, goal[2]) - mean * scale


def match_moments(x: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor], target: Sequence[Sequence[float]]
                  ) -> torch.Tensor:
    """Images [B, C, H, W] whose (mean, standard deviation) per channel is `moments` (each
    broadcastable to x: a morph's vary across the width) moved to target[c] = [mean,
    deviation, keep]: the deviation to target, the mean to target plus `keep` times its offset."""
    scale, offset = moments_affine(moments, target, x.dtype)
    return torch.addcmul(offset, x, scale).clamp(-1, 1)


def calibrate(x: torch.Tensor, z: torch.Tensor, config: TextureGANConfig,
              moments: tuple[torch.Tensor, torch.Tensor] | None = None, channels: slice = slice(None),
              check: Callable[[], None] | None = None, layout: list | None = None) -> torch.Tensor:
    """The generator's images x made from noise z, with whatever calibration `config` carries;
    `moments` are those of x's codes (`code_moments`), needed when config has image_moments.
    x may hold only the generator's `channels` (each step but the colour mix treats channels
    alone: a large picture is calibrated a few channels at a time, the colour's together, and
    gives the same pixels; `layout`, z's `tint_layout`, is then worked out once). With `check`, the
    Fourier transforms run in pieces, calling it between them (it may raise to stop).

    The first four steps are linear in the picture (an affine map per channel, a filter, a
    filter mixing the colour, an added field), so they are applied together in its spectrum,
    clamped once at the end: one transform each way where one after the other took three passes
    over the picture and another transform (a 1024^2 colour picture, one thread: 0.262 -> 0.250
    s in all). Clamps between the steps are gone: they bit on no pixel of lava's pictures. A
    morph's tone varies across the picture, so it is matched in the picture first."""
    pick = lambda rows: list(rows)[channels]  # noqa: E731
    pointwise = (lambda f, t: _by_rows(f, t, check)) if check else (lambda f, t: f(t))  # noqa: E731
    scale = offset = None
    if config.image_moments:
        if moments is None:
            raise ValueError("this model sets each picture's tone: pass the code_moments of its global codes")
        picked, target = (moments[0][:, channels], moments[1][:, channels]), pick(config.image_moments)
        # The kept share of the codes' offsets was measured at calibration_size^2: a larger picture
        # holds (side / calibration_size)^2 such crops, whose means in a photo vary apart, so its own
        # mean varies less.
        shrink = min(1.0, config.calibration_size / math.sqrt(x.shape[-2] * x.shape[-1]))
        target = [[mean, deviation, keep * shrink] for mean, deviation, keep in target]
        if picked[0].shape[-2:] != (1, 1):
            x = pointwise(lambda t: match_moments(t, picked, target), x)
        else:
            scale, offset = moments_affine(picked, target, torch.float32)
    if config.spectrum_gain or config.field_gain or config.colour_mix:
        h, w = x.shape[-2:]
        rows = gain_rows(config.spectrum_gain, channels) if config.spectrum_gain else None
        oriented = config.orientation_gain and _frozen(pick(config.orientation_gain))
        spectrum = _gained_spectrum(x, rows, check, oriented)
        if scale is not None:
            torch.view_as_real(spectrum).mul_(scale[..., None])
            spectrum[..., 0, 0] += offset[..., 0, 0] * (h * w)
        colour = _colour_in(channels, config) if config.colour_mix else None
        if colour is not None:
            _mix_colour(spectrum, config.colour_mix, (h, w), colour, check)
        if config.field_gain:
            coeffs, rows = field_spectrum(z, pick(config.field_gain), config.stride)
            spectrum[..., rows, : coeffs.shape[-1]] += coeffs
        x = _irfft2(spectrum, (h, w), check).to(x.dtype)
    elif scale is not None:
        x = torch.addcmul(offset.to(x.dtype), x, scale.to(x.dtype))
    if config.cell_tint:
        joints = config.cell_tint.get("joints")
        offsets = pick(config.cell_tint["offsets"])
        x = x + tint(z, config, config.cell_tint, offsets, joints and pick(joints), layout).to(x.dtype)
    if config.tone_curve:  # which clamps its input
        curve = pick(config.tone_curve)
        x = pointwise(lambda t: apply_tone(t, curve), x)
    if config.lattice_filter:  # a new tensor, clamped in place
        return apply_lattice_filter(x, [pick(axis) for axis in config.lattice_filter]).clamp_(-1, 1)
    return x if config.tone_curve else x.clamp(-1, 1)


def _colour_in(channels: slice, config: TextureGANConfig) -> slice | None:
    """Where the colour channels sit among the `channels` a calibration is given (None: not among
    them); a ValueError if only some are, as they are mixed together."""
    picked = range(config.out_channels)[channels]
    at = [i for i, c in enumerate(picked) if c < config.channels]
    if not at:
        return None
    if len(at) != config.channels or at[-1] - at[0] != len(at) - 1:
        raise ValueError(f"this model mixes its {config.channels} colour channels: calibrate them together")
    return slice(at[0], at[-1] + 1)


def _by_rows(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, check: Callable[[], None]) -> torch.Tensor:
    """A pointwise f of images x, a band of rows at a time, calling check() between bands."""
    return torch.cat([_checked(f(part), check) for part in x.split(max(1, CHUNK // x.shape[-1]), -2)], -2)


def _quantiles(x: torch.Tensor, levels: np.ndarray) -> np.ndarray:
    """np.quantile(x, levels) (linear), from one sort: 5x faster than its partitions at 257 levels."""
    ordered = np.sort(x.numpy(), axis=None)
    at = levels * (len(ordered) - 1)
    below = np.floor(at).astype(np.int64)
    above = np.minimum(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (at - below)


def _channel_spectra(x: torch.Tensor) -> torch.Tensor:
    """Radially averaged log10 power [C, K] per channel (`power_spectrum` of each)."""
    return torch.log10(radial_power(x) + 1e-8)


def _oriented_spectra(x: torch.Tensor) -> torch.Tensor:
    """`_channel_spectra` per direction: log10 power [C, ORIENTATIONS, K] (NaN where a radius has no
    coefficient in a direction)."""
    return torch.log10(oriented_power(x, ORIENTATIONS) + 1e-8)


def _oriented_residual(target: torch.Tensor, made: torch.Tensor, radial_miss: torch.Tensor) -> torch.Tensor:
    """log10 [C, A, K]: what each direction of `made` (`_oriented_spectra`) misses of `target`'s
    beyond what its radius misses as a whole (`radial_miss`, [C, K]), faded out from ORIENTED_WAVE
    to twice it: a crop holds few of the longer waves, and in few directions."""
    freqs = torch.arange(1, target.shape[-1] + 1) / (2 * target.shape[-1])
    fade = (freqs * 2 * ORIENTED_WAVE - 1).clamp(0, 1)
    return torch.nan_to_num(target - made - radial_miss[:, None], nan=0.0) * fade


def _within_reach(oriented: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """`oriented` [C, A, K] shrunk at each radius so that no direction is boosted past BOOST with
    `gain` [C, K], and at most ORIENTED_REACH either way. Clipped in each direction instead, a radius
    whose gain sat at the clip lost power where the generator made too much and gained none where it
    made too little: grass's spectrum ratio 1.36 -> 1.50 (docs/BENCHMARKS.md, "The gain per direction")."""
    oriented = oriented.clamp(-ORIENTED_REACH, ORIENTED_REACH)
    headroom = (BOOST - gain).clamp_min(0)[:, None]
    return oriented * (headroom / oriented.amax(1, keepdim=True).clamp_min(1e-6)).clamp(max=1)


def _linear(log_spectra: torch.Tensor) -> np.ndarray:
    """Linear power [C, K] from `_channel_spectra`'s log10 power."""
    return 10 ** log_spectra.double().numpy()


def _channel_power(x: torch.Tensor) -> np.ndarray:
    """Linear radially averaged power [C, K] per channel."""
    return _linear(_channel_spectra(x))


def calibration_crops(images: list[np.ndarray], side: int, n: int, seed: int = 0) -> torch.Tensor:
    """2n exemplar crops [2n, C, side, side] the corrections are measured on. Border-fair ones
    (`fair_edges`) as a rule: plain random 256 px crops of a 512 px photo are the statistics of its
    middle, which on gravel has more contrast than the rest. But where the photo's border is
    unlike its middle, more unlike than its two halves are unlike each other (by the spectrum
    distance), the border is not the material, and the crops are drawn as the figures draw theirs,
    uniformly inside each half (`real_sets`). Both distances are averaged over BORDER_DRAWS draws:
    over single draws of 128 crops a side gravel read up to 0.8x, tiles down to 1.8x. Over the
    suite the halves are taken on denim (a seam in the middle) and tiles (less contrast at every
    frequency near the border); see docs/BENCHMARKS.md, "The calibration's crops"."""
    grey = [image.mean(-1, keepdims=True) for image in images]  # the channels' mean decides: 3-9x cheaper
    log = lambda power: torch.log10(power.mean(0) + 1e-8)  # as evaluation.power_spectrum
    border = within = 0.0
    for k in range(BORDER_DRAWS):
        fair = ImageCrops(grey, side, flips=False, rot90=False, fair_edges=True, seed=seed + k).batch(np.arange(2 * n))
        power_a, power_b = (radial_power(half) for half in real_sets(grey, side, n, seed + k))
        border += float((log(radial_power(fair)) - log((power_a + power_b) / 2)).abs().mean())
        within += float((log(power_a) - log(power_b)).abs().mean())
    if border > within:
        return torch.cat(real_sets(images, side, n, seed))
    return ImageCrops(images, side, flips=False, rot90=False, fair_edges=True, seed=seed).batch(np.arange(2 * n))


def measurement_size(images: list[np.ndarray], config: TextureGANConfig) -> int:
    """The side of the pictures the calibration is measured on: SIZE, or LARGE_SIZE where the exemplars
    are at least twice that a side, do not repeat, and hold more than LONG_WAVE_SHARE of their
    variance in shapes longer than the discriminator's view (training says their large shapes will
    be lost). Measured at 256 px, the power of such a photo's long waves fell in a crop's lowest
    frequencies, and the gain and field drew it as patches of 128-256 px: bark's 1024² pictures,
    downsampled 4x, had 2-3x the photo's power at 64-256 px. Measured at 512 px (on half as many
    pictures, each four times the area), bark's Gram ratio went 2.26 -> 0.98 and its coarse Gram
    3.59 -> 2.08, marble's Gram 2.43 -> 1.30 (docs/BENCHMARKS.md, "The calibration's size"); on
    gravel, with no long waves, it changed little, and on tiles, which repeat, it doubled the
    spectrum ratio, so those stay at SIZE."""
    if config.repeat_waves or min(min(image.shape[:2]) for image in images) < 2 * LARGE_SIZE:
        return SIZE
    return LARGE_SIZE if _loses_large_shapes(images, config) else SIZE


def _loses_large_shapes(images: list[np.ndarray], config: TextureGANConfig) -> bool:
    """Whether the exemplars hold more than LONG_WAVE_SHARE of their variance in shapes longer than
    the discriminator's view: the shapes training says will be lost."""
    colour = [image[..., :config.channels or image.shape[-1]] for image in images]
    return max(long_wave_share(image, config.largest_view) for image in colour) > LONG_WAVE_SHARE


def _turned_texture(images: list[np.ndarray], config: TextureGANConfig) -> bool:
    """Whether the exemplars are a texture the gain per direction is measured for: trained on turned
    crops (no repeat, no direction), and without large shapes that training loses. Marble's slab
    joints are lines along both axes; with them its gain per direction drew streaks along both axes
    through every speck."""
    return not config.repeat_waves and not any(has_direction(image) for image in images) \
        and not _loses_large_shapes(images, config)


@torch.no_grad()
def measure(G: Generator, images: list[np.ndarray], n: int = 128, seed: int = 0, rounds: int = ROUNDS,
            lattice: bool = True, tints: bool = True) -> dict[str, list]:
    """The six corrections (module docstring) from 2n exemplar crops and n samples at 256^2 (or the
    smallest exemplar's size; half as many at 512^2, `measurement_size`): the config fields,
    rounded, as lists. The crops count the photo's border about as often as its middle
    (`calibration_crops`). The tone curve changes the spectrum, so the gain is corrected by what the
    curve's output still misses and the field and curve are measured again, `rounds` times in all
    (gravel spectrum ratio 0.79 -> 0.75 and 0.73 -> 0.68 on two generators; swd unchanged). The
    stored curves depend on the draw: over seeds 0-3 on one gravel generator (one round), the
    spectrum ratio spanned 0.70-0.81 with n = 64 and 0.72-0.75 with 128. It runs once, when
    training ends: on one CPU thread ~57 s for a nine-channel PBR set, and the lattice filter
    (`lattice`; `measure_lattice`) ~1.2 s more per channel, and the tints (`tints`, where the
    exemplar repeats in two directions) 3-6 s more."""
    size = measurement_size(images, G.cfg)
    if size > SIZE:
        n //= 2  # each picture four times the area
    side = min(size, *(min(img.shape[:2]) for img in images))
    side -= side % G.cfg.stride
    real = calibration_crops(images, side, n, seed)
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    which = torch.arange(n, device=device) % max(G.cfg.n_exemplars, 1)
    z_local, z_global, phase = G.sample_noise(n, side, side, torch.Generator().manual_seed(seed), device)
    z = G.noise(z_local, z_global, phase, which, exact_repeat=True)
    raw = torch.cat([G.synthesize(part).float().cpu() for part in z.split(32)])  # bounded memory
    moments = None
    if G.cfg.n_exemplars <= 1:  # several exemplars differ in tone on purpose: one target would blur them
        mean, std = (m.float().cpu() for m in code_moments(G, z_global, phase, which))
        average = torch.cat([mean, std], 2).mean(0)[..., 0]  # [C, 2]: the average code's moments
        # What the pictures' means still vary by once their codes' offsets are gone (their local
        # noise), topped up from the codes' offsets to the photo's crops' variance:
        matched = match_moments(raw, (mean, std), torch.cat([average, torch.zeros(len(average), 1)], 1).tolist())
        missing = (image_moments(real)[0].var(0) - image_moments(matched)[0].var(0)).clamp_min(0)
        keep = (missing / mean.var(0).clamp_min(1e-12)).sqrt().clamp(max=1)[:, 0]
        moments = torch.cat([average, keep], 1).tolist()
        raw = match_moments(raw, (mean, std), moments)
    tinting = tints and G.cfg.n_repeat == 2 and len(images) == 1 and _tint_measurement(G, images, z, raw, moments, seed)
    G.train(was_training)

    target_log = _channel_spectra(real)
    miss = target_log - _channel_spectra(raw)
    gain = miss.clamp(CUT, BOOST)
    oriented = None
    if _turned_texture(images, G.cfg):
        target_oriented = _oriented_spectra(real)
        oriented = _within_reach(_oriented_residual(target_oriented, _oriented_spectra(raw), miss), gain)
    listed = lambda t: None if t is None else t.tolist()  # noqa: E731
    z = z.cpu()
    channels = raw.shape[1]
    unit = _channel_power(noise_field(z, [[1.0] * gain.shape[1]] * channels, G.cfg.stride))
    target = _linear(target_log)  # _channel_power(real), from the spectra just measured
    freqs = np.arange(1, gain.shape[1] + 1) / (2 * gain.shape[1])
    levels = np.linspace(0, 1, TONE_LEVELS)
    grid = np.linspace(-1, 1, TONE_LEVELS)
    real_levels = [_quantiles(real[:, c], levels) for c in range(channels)]
    mixing = G.cfg.channels == 3
    layout = tint_layout(z, G.cfg, tinting[0]) if tinting else None  # z's cells: the same in every round
    for round_ in range(rounds):
        x = apply_gain(raw, gain.tolist(), oriented=listed(oriented))
        if mixing:
            mix = measure_colour_mix(x[:, :3], real[:, :3])
            x[:, :3] = apply_colour_mix(x[:, :3], mix)
        cell_tint = None
        if tinting:
            cells, real_means, real_folds, phases, big_phases, big_raw = tinting
            big = apply_gain(big_raw, gain.tolist(), oriented=listed(oriented))
            if mixing:
                big[:, :3] = apply_colour_mix(big[:, :3], mix)
            offsets = cell_offsets(real_means, cell_means(big, big_phases, cells))
            if offsets:
                x = x + tint(z, G.cfg, cells, offsets, layout=layout)
                # the joints where G draws them: each joint phase as the photo's is on average
                joint = np.array(cells["joint"], bool)
                joints = np.stack([real_folds[c] - fold(x[:, c], phases) for c in range(channels)])[:, joint]
                cell_tint = cells | {"offsets": np.round(offsets, 4).tolist(), "joints": np.round(joints, 4).tolist()}
                x = x + joint_shades(phases, cells, cell_tint["joints"])
        reach = 0.5 / G.cfg.stride  # the field stays below the cells' Nyquist frequency; with tints below
        if cell_tint:  # the repeat's too: the photo's power there is its joints', painted as blotches by a field
            reach = min(reach, float(np.hypot(*np.array(G.cfg.repeat_waves).T).min()))
        field = np.zeros_like(target)
        for _ in range(FIELD_PASSES):
            made = _channel_power((x + noise_field(z, field, G.cfg.stride)).clamp(-1, 1))
            field = np.sqrt(np.maximum(field ** 2 * unit + target - made, 0) / unit) * (freqs < reach)
        x = (x + noise_field(z, field, G.cfg.stride)).clamp(-1, 1)
        tone = []
        for c in range(channels):
            made = _quantiles(x[:, c], levels) + levels * 1e-6  # strictly increasing for interp
            tone.append(np.interp(grid, made, real_levels[c]))
        if round_ < rounds - 1:  # the tone curve moved the spectrum: correct the gain by what is left
            toned = apply_tone(x, tone)
            miss = target_log - _channel_spectra(toned)
            gain = (gain + miss).clamp(CUT, BOOST)
            if oriented is not None:
                oriented = _within_reach(oriented + _oriented_residual(target_oriented, _oriented_spectra(toned), miss),
                                         gain)
    rounded = lambda a: np.round(np.asarray(a, dtype=np.float64), 4).tolist()
    out = {"image_moments": moments and rounded(moments), "calibration_size": size, "spectrum_gain": rounded(gain),
           "orientation_gain": listed(oriented) and rounded(oriented),
           "field_gain": rounded(field),
           "colour_mix": rounded(mix) if mixing else None, "cell_tint": cell_tint, "tone_curve": rounded(tone)}
    if lattice:
        out["lattice_filter"] = measure_lattice(G, dataclasses.replace(G.cfg, **out), min(n, LATTICE_PICTURES), seed)
    return out


def _tint_measurement(G: Generator, images: list[np.ndarray], z: torch.Tensor, raw: torch.Tensor,
                      moments: list | None, seed: int) -> tuple | None:
    """What `cell_tint` is measured from: the cells of the exemplar's repeat where the generator has
    them (`aligned`, on the pictures raw of noise z), the exemplar's cell means and its fold per
    channel there, the phases of z's pictures, and TINT_PICTURES larger pictures (their phases, raw
    pictures toned as raw is) whose cells are compared with them; None where the exemplar's fold
    has no closed cell or the generator's does not match it."""
    colour = slice(0, G.cfg.channels)
    image = torch.from_numpy(np.asarray(images[0], np.float32)).permute(2, 0, 1)[None]
    phases = exemplar_phases(image.shape[-2], image.shape[-1], G.cfg.repeat_waves)
    folded = fold(image[:, colour].mean(1), phases)
    real_cells = find_cells(folded)
    made_phases = picture_phases(z.cpu(), G.cfg)[0]
    shift = real_cells and best_shift(folded, fold(raw[:, colour].mean(1), made_phases))
    if shift is None:
        return None
    cells = aligned(real_cells, shift)
    moved = phases + torch.tensor(shift).view(1, 2, 1, 1) / BINS  # the photo's phases where G has them
    real_folds = [fold(image[:, c], moved) for c in range(image.shape[1])]
    device = next(G.parameters()).device
    z_local, z_global, phase = G.sample_noise(TINT_PICTURES, TINT_SIZE, TINT_SIZE,
                                              torch.Generator().manual_seed(seed + 1), device)
    big_z = G.noise(z_local, z_global, phase, exact_repeat=True)
    big_raw = torch.cat([G.synthesize(part).float().cpu() for part in big_z.split(1)])
    if moments is not None:
        big_raw = match_moments(big_raw, [m.float().cpu() for m in code_moments(G, z_global, phase)], moments)
    big_phases = picture_phases(big_z.cpu(), G.cfg)[0]
    return cells, cell_means(image, phases, real_cells), real_folds, made_phases, big_phases, big_raw


@torch.no_grad()
def measure_lattice(G: Generator, config: TextureGANConfig, n: int = LATTICE_PICTURES, seed: int = 0
                    ) -> list[list[list[list[float]]]]:
    """`lattice_filter` for G under the rest of config's calibration: fitted on n pictures at 256²
    calibrated as `generate` calibrates them (engine/texture/lattice.py), a map's channels together."""
    # Without the tints: their steps at the joints are not the generator's lattice, and with them the
    # fit over-corrected tiles' (lattice 0.90; without them 0.98, as before the tints)
    config = dataclasses.replace(config, lattice_filter=None, cell_tint=None)
    device = next(G.parameters()).device
    which = torch.arange(n, device=device) % max(G.cfg.n_exemplars, 1)
    z_local, z_global, phase = G.sample_noise(n, SIZE, SIZE, torch.Generator().manual_seed(seed), device)
    pictures = []
    for part in torch.arange(n).split(16):  # bounded memory
        z = G.noise(z_local[part], z_global[part], phase[part], which[part], exact_repeat=True)
        moments = code_moments(G, z_global[part], phase[part], which[part]) if config.image_moments else None
        pictures.append(calibrate(G.synthesize(z), z, config, moments).float().cpu())
    return fit_lattice_filter(torch.cat(pictures), list(G.cfg.layout.values()), G.cfg.stride)
