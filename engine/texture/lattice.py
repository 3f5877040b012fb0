"""The generator's lattice, taken out of its pictures: a step of the calibration.

Nearest-neighbour upsampling leaves the gradients across some lines of the generator's cell grid
weaker (or stronger) than elsewhere, on every 4th, 8th or 16th line (`evaluation.lattice`: the
grey default 0.917, bricks 0.935, planks 1.058 as shipped). Training's lattice penalty keeps it
small on the raw stack of maps, where the normal map's gradients outweigh the colour's, and the
spectrum gain and tone curve deepen what is left (bricks 0.966 raw, 0.935 calibrated). Penalised
harder or per map, it cost planks their straight joints (docs/BENCHMARKS.md, "Lattice penalty").

So the calibration measures the lattice on its own pictures and undoes it: along each axis, a
pixel takes a share a of its difference to the pixel before and c of that to the pixel after,
y[k] = x[k] + a (x[k-1] - x[k]) + c (x[k+1] - x[k]), with a and c depending on the pixel's position
in its cell (modulo the stride). Both have mean 0 over the positions, so the texture is neither
sharpened nor blurred overall (the spectrum gain has set that); they are fitted so that the
gradient energy across every gap of the cell, taken as the lattice measure takes it (the mean log
of the channels' mean squared difference), is the same. A symmetric filter alone (a = c) cannot
tell a gap from its neighbour and leaves a period-2 pattern (ground's 0.965) where it was. A
map's channels share one set. On the shipped materials (their lattice measured on 48 other
pictures, as `generate` makes them): the grey default 0.917 -> 0.986, bricks 0.935 -> 0.988,
planks 1.058 -> 1.039, ground 0.965 -> 0.995, grass 1.019 -> 0.991; taps within ±0.05, and no
difference to be seen at 4x (docs/BENCHMARKS.md, "Lattice filter").
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-4  # as evaluation.lattice_ratios: about one 8-bit step squared


def apply_lattice_filter(x: torch.Tensor, taps: Sequence[Sequence[Sequence[Sequence[float]]]]) -> torch.Tensor:
    """x [B, C, H, W] (a torus, sides multiples of the stride) with each channel's taps
    [axis (x, y)][channel][position modulo the stride][neighbour before, after] applied, along the
    width then the height: y[k] = x[k] + a (x[k-1] - x[k]) + c (x[k+1] - x[k])."""
    t = torch.as_tensor(taps, dtype=x.dtype, device=x.device)
    stride = t.shape[-2]
    for axis, dim in ((0, -1), (1, -2)):
        a, c = (t[axis, ..., i].repeat(1, x.shape[dim] // stride) for i in (0, 1))  # [C, side]
        a, c = (a[:, None, :], c[:, None, :]) if dim == -1 else (a[..., None], c[..., None])
        # views of one padded copy, three passes: 2.5x faster than rolls (1024² colour, one thread)
        padded = F.pad(x, (1, 1, 0, 0) if dim == -1 else (0, 0, 1, 1), mode="circular")
        before, after = padded.narrow(dim, 0, x.shape[dim]), padded.narrow(dim, 2, x.shape[dim])
        # the caller's x is left alone; the first pass's result is this function's to overwrite
        x = (x * (1 - a - c) if axis == 0 else x.mul_(1 - a - c)).addcmul_(before, a).addcmul_(after, c)
    return x


def _gap_statistics(d: torch.Tensor, dim: int, stride: int) -> torch.Tensor:
    """[6, samples, stride] from differences d [N, C, H, W] (d[k] = x[k+1] - x[k] along dim): per
    gap, the channels' mean products of the gap's difference with those of the gaps either side
    (before², here², after², before·here, here·after, before·after): all that a filtered gap's
    squared difference depends on."""
    before, after = d.roll(1, dim), d.roll(-1, dim)
    pairs = [(before, before), (d, d), (after, after), (before, d), (d, after), (before, after)]
    return torch.stack([(u * v).mean(1).movedim(dim, -1) for u, v in pairs]).reshape(6, -1, stride)


def _gap_log_energy(stats: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[stride]: each gap's mean log energy once every pixel k takes a[k] of its difference to the
    pixel before and c[k] of that to the one after: gap j's difference becomes
    a[j] * before + (1 - a[j+1] - c[j]) * here + c[j+1] * after."""
    b, h, f = a, 1 - a.roll(-1) - c, c.roll(-1)
    energy = (b * b * stats[0] + h * h * stats[1] + f * f * stats[2]
              + 2 * (b * h * stats[3] + h * f * stats[4] + b * f * stats[5]))
    return (energy.clamp_min(0) + EPS).log().mean(0)


def fit_lattice_filter(x: torch.Tensor, groups: Sequence[slice], stride: int) -> list[list[list[list[float]]]]:
    """The taps [axis][channel][position][before, after] that flatten the lattice of pictures
    x [N, C, H, W] in [-1, 1] (tiling, sides multiples of `stride`), one set per group of channels
    (a map). Each tap has mean 0 over the positions."""
    x = x.float()
    out = torch.zeros(2, x.shape[1], stride, 2)
    for axis, dim in ((0, -1), (1, -2)):
        d = x.roll(-1, dim) - x
        for group in groups:
            stats = _gap_statistics(d[:, group], dim, stride)
            free = torch.zeros(2, stride, requires_grad=True)
            optimiser = torch.optim.LBFGS([free], lr=1, max_iter=100, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                optimiser.zero_grad()
                taps = free - free.mean(1, keepdim=True)
                e = _gap_log_energy(stats, *taps)
                loss = (e - e.mean()).pow(2).mean()
                loss.backward()
                return loss

            optimiser.step(closure)
            out[axis, group] = (free - free.mean(1, keepdim=True)).detach().T
    return out.round(decimals=4).tolist()
