"""The repeat of a regular exemplar (tiles, a brick bond, roof tiles): its lattice, from the peaks of
its autocorrelation, as the wave vectors the generator and the discriminator are given.

A repeat larger than the training crop cannot be learned from crops alone: a 96 px crop of
205 px tiles holds one grout line at most, so no crop tells how far the next one is. Given the
phase of the repeat at every pixel (the real crop's from where it was cut, the fake's from the
generator's own waves), the discriminator judges what belongs where in the repeat, and the
repeat becomes a local question.

Large shapes that do not repeat (cobblestones, marble's slabs) have no such help: `long_wave_share`
says how much of an exemplar lies beyond the crops, and `exemplar_scale` how far to shrink it so
that they fit.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter

from engine.texture.images import shrink

# A peak counts as a repeat where the autocorrelation (1 at lag 0) is at least this high and at
# least PROMINENCE above its lowest value on the way there. On the suite (bench/data/textures):
# tiles 0.53-0.57, bricks 0.47-0.50, roof tiles 0.43; ridges along a direction (bark 0.24, marble
# 0.27, denim 0.26) and the stochastic sets (< 0.1) stay below.
MIN_PEAK = 0.35
PROMINENCE = 0.15
SHORTEST = 12  # px: shorter lags are the grain, not a repeat
# Every vector of the lattice but the strongest peaks at least this share of it: a lag of one brick
# course without the bond's shift matches the bed joints and not the head joints (bricks 0.40 against
# 0.47-0.50; tiles' two axes 0.53 and 0.57).
SAME_PEAK = 0.85
# The share of an exemplar's variation at wavelengths longer than the crops judged above which its
# large shapes are lost, where it does not repeat: training shrinks it or says so. On the suite at 96 px
# marble 0.39, cobblestone 0.25, bark 0.25, the three that trained at full size do not read as their
# material or only in part (halved: 0.37, 0.08, 0.22; cobblestone halved draws its stones); denim 0.16,
# planks 0.15, rock 0.14, the rest at most 0.05 (tiles 0.44: their repeat is given to both nets).
LONG_WAVE_SHARE = 0.2
SMALLEST_SIDE = 512  # px: an exemplar is shrunk no further (the figures take 256 px crops from each half)


def autocorrelation(image: np.ndarray) -> np.ndarray:
    """[H, W] circular autocorrelation of the channel mean, 1 at lag 0, lag (0, 0) at the centre."""
    grey = image.reshape(*image.shape[:2], -1).mean(-1).astype(np.float64)
    grey = grey - grey.mean()
    power = np.abs(np.fft.fft2(grey)) ** 2
    acf = np.fft.ifft2(power).real
    return np.fft.fftshift(acf / max(acf[0, 0], 1e-12))


def repeat_lattice(image: np.ndarray) -> list[tuple[float, float]]:
    """Up to two independent repeat vectors (dy, dx) in px, the shortest basis of the repeat; [] for an
    exemplar that does not repeat. Each is refined from its furthest multiple inside the search window."""
    acf = autocorrelation(image)
    reach = min(acf.shape) / 2.5
    r = int(reach) + 3  # the lags searched, and the refining window's margin
    acf = acf[acf.shape[0] // 2 - r:acf.shape[0] // 2 + r + 1, acf.shape[1] // 2 - r:acf.shape[1] // 2 + r + 1]
    cy = cx = r
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    half_plane = (yy > 0) | ((yy == 0) & (xx > 0))
    candidates = (acf == maximum_filter(acf, size=9)) & half_plane & (np.hypot(yy, xx) >= SHORTEST) \
        & (np.hypot(yy, xx) <= reach) & (acf >= MIN_PEAK)

    def prominent(dy: int, dx: int, floor: float = MIN_PEAK) -> bool:
        """High, and higher than the valley on the way to it: a lag along a stripe only falls."""
        t = np.linspace(0, 1, int(np.hypot(dy, dx)) + 1)
        way = acf[cy + np.round(t * dy).astype(int), cx + np.round(t * dx).astype(int)]
        return way[-1] >= floor and way[-1] - way.min() >= PROMINENCE

    # The strongest peak is the first vector, then the strongest that is not a multiple of it, taken
    # as its shortest equivalent modulo the first: a peak on the ridge of a stripe (roof tiles'
    # columns) becomes a lag along the stripe, which does not repeat.
    peaks = sorted((-round(float(acf[y, x]), 2), float(np.hypot(yy[y, x], xx[y, x])), int(yy[y, x]), int(xx[y, x]))
                   for y, x in zip(*np.nonzero(candidates)))
    peaks = [p[2:] for p in peaks if prominent(*p[2:])]
    if not peaks:
        return []
    basis = [peaks[0]]
    ay, ax = peaks[0]
    floor = SAME_PEAK * acf[cy + ay, cx + ax]  # every point of a lattice correlates alike
    for dy, dx in peaks[1:]:
        m = round((dy * ay + dx * ax) / (ay * ay + ax * ax))
        dy, dx = dy - m * ay, dx - m * ax
        if abs(dy * ax - dx * ay) > 0.5 * np.hypot(dy, dx) * np.hypot(ay, ax) and prominent(dy, dx, floor):
            basis = _reduced((ay, ax), (dy, dx))
            break
    # The strongest peak may be every second or third tile (the tiles' shades vary): a lattice
    # vector that is a fraction of the basis makes it finer.
    def finer(basis: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
        for n in (2, 3):
            for i, j in [(i, j) for i in range(n) for j in range(n if len(basis) == 2 else 1) if i or j]:
                v = (np.array(basis[0]) * i + (np.array(basis[1]) * j if j else 0)) / n
                # of the pixels around the fraction, the one most alike (42.5 px: 42 or 43)
                around = [(y, x) for y in {math.floor(v[0]), math.ceil(v[0])}
                          for x in {math.floor(v[1]), math.ceil(v[1])}]
                dy, dx = max(around, key=lambda p: acf[cy + p[0], cx + p[1]])
                if np.hypot(dy, dx) >= SHORTEST and prominent(dy, dx, floor):
                    return [(dy, dx)] if len(basis) == 1 else _reduced((dy, dx), basis[1 if i else 0])
        return None

    while (smaller := finer(basis)) is not None:
        basis = smaller
    return [tuple(map(float, _refined(acf, int(dy), int(dx), reach))) for dy, dx in basis]


def _reduced(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """The shortest basis of the lattice a and b span (Lagrange-Gauss reduction), shortest first."""
    a, b = np.array(a), np.array(b)
    if a @ a > b @ b:
        a, b = b, a
    while True:
        b = b - round(float(a @ b / (a @ a))) * a
        if b @ b >= a @ a:
            return [tuple(map(int, a)), tuple(map(int, b))]
        a, b = b, a


def _refined(acf: np.ndarray, dy: int, dx: int, reach: float) -> tuple[float, float]:
    """(dy, dx) / n from the peak nearest n (dy, dx) for the largest n inside the window."""
    n = max(1, int(reach // np.hypot(dy, dx)))
    ty, tx = acf.shape[0] // 2 + n * dy, acf.shape[1] // 2 + n * dx
    window = acf[ty - 2:ty + 3, tx - 2:tx + 3]
    oy, ox = np.unravel_index(int(np.argmax(window)), window.shape)
    return (n * dy + oy - 2) / n, (n * dx + ox - 2) / n


def repeat_waves(image: np.ndarray) -> list[list[float]]:
    """The wave vectors (ky, kx) in cycles per px whose phases place a pixel in the exemplar's
    repeat (the reciprocal lattice of `repeat_lattice`); [] where it does not repeat."""
    lattice = repeat_lattice(image)
    if not lattice:
        return []
    if len(lattice) == 1:
        (dy, dx), = lattice
        norm = dy * dy + dx * dx
        return [[float(dy / norm), float(dx / norm)]]
    return np.linalg.inv(np.array(lattice)).T.tolist()


def long_wave_share(image: np.ndarray, wavelength: float) -> float:
    """The share of the exemplar's grey variance at wavelengths longer than `wavelength` px. The
    image is Hann-windowed first: a photo does not wrap, and its edges would add long waves of their own."""
    grey = image.reshape(*image.shape[:2], -1).mean(-1).astype(np.float64)
    h, w = grey.shape
    power = np.abs(np.fft.fft2((grey - grey.mean()) * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    power[0, 0] = 0.0
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    return float(power[frequency < 1 / wavelength].sum() / max(power.sum(), 1e-12))


def exemplar_scale(images: list[np.ndarray], view: int) -> tuple[int, float, float]:
    """(factor, share as they are, share at the factor): how many times training shrinks the exemplars
    (1, 2, 4, ...), the fewest that bring every one's `long_wave_share` beyond `view` px under
    LONG_WAVE_SHARE, keeping their sides at least SMALLEST_SIDE; 1 where none does."""
    whole = share = max(long_wave_share(image, view) for image in images)
    factor = 1
    while share > LONG_WAVE_SHARE:
        if min(min(image.shape[:2]) for image in images) // (2 * factor) < SMALLEST_SIDE:
            return 1, whole, whole
        factor *= 2
        share = max(long_wave_share(shrink(image, factor), view) for image in images)
    return factor, whole, share
