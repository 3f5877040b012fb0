"""A tint per tile: an exemplar that repeats in two directions (tiles, a brick bond) varies from one
tile or brick to the next (one tile orange, the next grey). The generator, which sees a tile or two
at a time, makes them alike, and the calibration's random field (calibration.py) paints the power
they miss as blotches across the joints.

Here the cells of the repeat are found by folding the exemplar onto one repeat, each pixel at its
phase in the two waves (engine/texture/repeats.py): the joints are the phases that stand out from
the fold's median, a cell is what they enclose. The generator's pictures, folded the same way,
place them where their fold matches the exemplar's best. Each cell of a picture gets the mean of one of the
exemplar's cells (less the exemplar's mean, scaled down by what the generator's cells vary
already), picked by the noise cell under its centre, so that a tileable picture stays tileable and
a seed gives the same picture. Joints get no offset; each joint phase is shaded instead by what the
photo's fold has there less the generator's, so that joints the generator breaks off run on as
the photo's do.
"""
from __future__ import annotations

import math

import numpy as np
import torch

BINS = 64  # a repeat is folded onto BINS x BINS phases
FULL = 0.8  # a cell counts where at least this share of the largest cell's pixels are in the picture
JOINT = 0.5  # a joint: a phase further from the fold's median than this share of the furthest
LEVELS = (0.5, 0.3, 0.2, 0.1, 0.05)  # the shares tried for joints that close a cell
OUTSIDE = 99  # a phase not yet in the cell
MATCH = 0.5  # the least correlation of the generator's fold with the exemplar's that takes its cells


def picture_phases(z: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The phase in repeats (unwrapped) of each of the two repeat waves at every pixel of the
    picture of noise z [B, n, h, w], [B, 2, H, W], as read from z's wave channels (snapped to the
    picture or not); with it the phase at pixel (0, 0) [B, 2] and the waves [B, 2, 2] in cycles per px."""
    b, _, h, w = z.shape
    at = config.n_local + config.n_global + config.n_periodic
    turns = torch.atan2(z[:, at:at + 2].double(), z[:, at + 2:at + 4].double()) / (2 * math.pi)
    start = turns[:, :, 0, 0]
    wrap = lambda t: torch.remainder(t + 0.5, 1.0) - 0.5  # noqa: E731
    s = config.stride
    waves = torch.stack([wrap(turns[:, :, 1, 0] - start), wrap(turns[:, :, 0, 1] - start)], -1) / s
    y = torch.arange(h * s, device=z.device, dtype=torch.float64).view(1, 1, -1, 1)
    x = torch.arange(w * s, device=z.device, dtype=torch.float64).view(1, 1, 1, -1)
    phases = (start[..., None, None] + waves[..., 0, None, None] * y).float() + (waves[..., 1, None, None] * x).float()
    return phases, start, waves


def exemplar_phases(height: int, width: int, waves: list[list[float]]) -> torch.Tensor:
    """[1, 2, H, W] the phases in repeats of the waves (cycles per px) at every pixel of the exemplar."""
    k = torch.tensor(waves, dtype=torch.float64)
    y = torch.arange(height, dtype=torch.float64).view(1, -1, 1)
    x = torch.arange(width, dtype=torch.float64).view(1, 1, -1)
    return (k[:, 0, None, None] * y + k[:, 1, None, None] * x).float()[None]


def _bins(phases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole repeats [B, 2, H, W] and each pixel's place in its repeat, 0..BINS^2-1 [B, H, W]."""
    whole = torch.floor(phases)
    at = ((phases - whole) * BINS).long().clamp_(max=BINS - 1)
    return whole, at[:, 0] * BINS + at[:, 1]


def fold(luminance: torch.Tensor, phases: torch.Tensor) -> np.ndarray:
    """[BINS, BINS] the mean of luminance [B, H, W] over the pixels at each phase of the repeat."""
    flat = _bins(phases)[1].flatten()
    total = torch.bincount(flat, luminance.flatten().double(), BINS * BINS)
    count = torch.bincount(flat, minlength=BINS * BINS).double()
    total, count = total.view(BINS, BINS).numpy(), count.view(BINS, BINS).numpy()
    empty = count == 0  # a repeat of a whole number of px fills only that many phases: take the neighbours'
    near = lambda a: sum(np.roll(a, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # noqa: E731
    total, count = np.where(empty, near(total), total), np.where(empty, near(count), count)
    return total / np.maximum(count, 1)


def find_cells(folded: np.ndarray) -> dict | None:
    """The cell of a folded repeat: {"table": [BINS][BINS] the code 5 (ty + 2) + (tx + 2) of the
    repeat t that the cell holding each phase is shifted by from the fold, "joint": [BINS][BINS] 1
    at a joint, "centre": the cell's centre in repeats}; None where the joints do not enclose one
    cell per repeat (stripes, a stochastic surface). Joints are the phases furthest from the fold's
    median, beyond JOINT of the furthest; a cell is what the highest of the LEVELS that closes one
    encloses (a brick bond's head joints stand out less than its bed joints), grown out to the
    phases between it and its neighbours."""
    d = folded - np.median(folded)
    low, high = np.quantile(d, [0.01, 0.99])
    d = d / max(high, -low) if high >= -low else -d / max(high, -low)
    for level in LEVELS:
        shift, centre = _closed_cell(d > level)
        if shift is not None:
            shift = _grown(shift)
            return {"table": (5 * (shift[0] + 2) + shift[1] + 2).tolist(), "joint": (d > JOINT).astype(int).tolist(),
                    "centre": centre}
    return None


def _closed_cell(joint: np.ndarray) -> tuple[np.ndarray | None, list[float]]:
    """[2, BINS, BINS] the repeat t in {-1, 0, 1}^2 each phase of the largest region the joints
    enclose lies in, with a large value at phases outside it, and its centre in repeats; None where
    the region is not one closed cell of one repeat."""
    from scipy.ndimage import label  # measured once, after training: not on generate's import path

    labels, _ = label(np.tile(~joint, (3, 3)))
    counts = np.bincount(labels[BINS:2 * BINS, BINS:2 * BINS].ravel())
    counts[0] = 0
    mask = labels == int(np.argmax(counts))
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        return None, []  # it runs on beyond three repeats: joints do not close it
    shift = np.full((2, BINS, BINS), OUTSIDE, np.int64)
    for ty in (-1, 0, 1):
        for tx in (-1, 0, 1):
            here = mask[(1 + ty) * BINS:(2 + ty) * BINS, (1 + tx) * BINS:(2 + tx) * BINS]
            if (here & (shift[0] != OUTSIDE)).any():
                return None, []  # the region holds one phase twice: more than one repeat
            shift[:, here] = [[ty], [tx]]
    if (shift[0] != OUTSIDE).sum() < 0.5 * BINS * BINS:
        return None, []
    ys, xs = np.nonzero(mask)
    return shift, [float(ys.mean() + 0.5) / BINS - 1, float(xs.mean() + 0.5) / BINS - 1]


def _grown(shift: np.ndarray) -> np.ndarray:
    """The cell grown a phase at a time into the phases outside it: a phase takes a neighbour's
    repeat, one more or less where the step crosses the fold's edge."""
    shift = shift.copy()
    while (shift[0] == OUTSIDE).any():
        for axis in (0, 1):
            for step in (1, -1):
                taken = np.roll(shift, step, axis + 1)
                edge = [slice(None), slice(None)]
                edge[axis] = 0 if step == 1 else BINS - 1  # the phases the roll brought across the fold's edge
                taken[(axis, *edge)] += step
                free = (shift[0] == OUTSIDE) & (np.abs(taken) < OUTSIDE - 2).all(0)
                shift[:, free] = taken[:, free]
    return shift


def best_shift(folded: np.ndarray, made: np.ndarray) -> tuple[int, int] | None:
    """The whole phases (rows, columns) by which the generator's fold `made` is the exemplar's
    `folded` moved, as their correlation is highest; None where even that is under MATCH: the
    generator does not draw the photo's joints, and tints would not follow its own."""
    a, b = ((f - f.mean()) / max(f.std(), 1e-12) for f in (made, folded))
    match = np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), s=a.shape) / a.size
    ky, kx = np.unravel_index(int(np.argmax(match)), match.shape)
    return None if match[ky, kx] < MATCH else (int(ky), int(kx))


def aligned(cells: dict, shift: tuple[int, int]) -> dict:
    """The exemplar's cells (found in its fold) moved by `shift` phases (`best_shift`), where the
    generator has them."""
    ky, kx = shift
    code = np.array(cells["table"])
    ty, tx = np.roll(code // 5 - 2, (ky, kx), (0, 1)), np.roll(code % 5 - 2, (ky, kx), (0, 1))
    ty[:ky] += 1  # phases the shift carried past the fold's edge: one repeat on
    tx[:, :kx] += 1
    return {"table": (5 * (ty + 2) + tx + 2).tolist(), "joint": np.roll(cells["joint"], (ky, kx), (0, 1)).tolist(),
            "centre": [cells["centre"][0] + ky / BINS, cells["centre"][1] + kx / BINS]}


def _table(cells: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per phase (BINS^2 of them): the repeat its cell is shifted by [2, BINS^2], and whether it is a joint."""
    code = torch.tensor(cells["table"], device=device).flatten()
    shift = torch.stack([torch.div(code, 5, rounding_mode="floor") - 2, torch.remainder(code, 5) - 2])
    return shift, torch.tensor(cells["joint"], device=device, dtype=torch.bool).flatten()


def _cells(phases: torch.Tensor, cells: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel: its cell, in whole repeats [B, 2, H, W] (float), and whether it is a joint [B, H, W]."""
    whole, at = _bins(phases)
    shift, joint = _table(cells, phases.device)
    return whole - shift[:, at].transpose(0, 1), joint[at]


def cell_positions(phases: torch.Tensor, cells: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel: the cell's centre in repeats [B, 2, H, W] (the same for every pixel of a cell) and
    whether the pixel is a joint [B, H, W]."""
    cell, joint = _cells(phases, cells)
    return cell + torch.tensor(cells["centre"], device=phases.device).view(1, 2, 1, 1), joint


def cell_means(x: torch.Tensor, phases: torch.Tensor, cells: dict) -> np.ndarray:
    """[N, C] the mean of each whole cell of pictures x [B, C, H, W], less its picture's mean of them."""
    where, joint = _cells(phases, cells)
    out = []
    for picture, at, off in zip(x, where, joint):
        keep = ~off.flatten()
        cell = at.flatten(1)[:, keep].long()
        cell -= cell.amin(1, keepdim=True)
        ids = cell[0] * (int(cell[1].max()) + 1) + cell[1]  # one number per cell (some unused)
        values = picture.flatten(1)[:, keep].double()
        count = torch.bincount(ids).double()
        sums = torch.stack([torch.bincount(ids, v, len(count)) for v in values], 1)
        whole = count >= FULL * count.max()
        if whole.sum() >= 2:
            means = (sums[whole] / count[whole, None]).numpy()
            out.append(means - means.mean(0))
    return np.concatenate(out) if out else np.zeros((0, x.shape[1]))


def cell_offsets(real: np.ndarray, made: np.ndarray) -> list[list[float]] | None:
    """[C, N]: the real cell means [N, C], each channel scaled so that with the spread of the made
    ones it has the real spread; None where the made cells vary as much already. The photo's own
    tints, not a Gaussian of their spread: tiles go from orange to grey, never to teal."""
    if len(real) < 3 or len(made) < 3:
        return None
    scale = np.sqrt(np.clip(1 - made.var(0, ddof=1) / np.maximum(real.var(0, ddof=1), 1e-12), 0, 1))
    return None if not scale.any() else (real * scale).T.tolist()


def _shades(joint: torch.Tensor, joints: list[list[float]] | None, channels: int) -> torch.Tensor:
    """[C, BINS^2] each phase's shade: `joints` [C, n] on the n joint phases (in the order of the
    fold's rows), zero elsewhere."""
    table = torch.zeros(channels, BINS * BINS, device=joint.device)
    if joints:
        table[:, joint] = torch.tensor(joints, dtype=torch.float32, device=joint.device)
    return table


def joint_shades(phases: torch.Tensor, cells: dict, joints: list[list[float]]) -> torch.Tensor:
    """[B, C, H, W]: on each joint pixel, the shade `joints` [C, n] gives its phase; zero elsewhere."""
    return _shades(_table(cells, phases.device)[1], joints, len(joints))[:, _bins(phases)[1]].transpose(0, 1)


def tint_layout(z: torch.Tensor, config, cells: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per picture of noise z, what `tint` spreads its values by, the same for every channel: each
    pixel's index [H, W] into the picture's values (the BINS^2 joint shades, then one per cell of
    its grid) and, per cell, the normal CDF of the local noise channel 1 (channel 0 draws the
    field) of the noise cell under its centre, which picks the cell's offset."""
    phases, start, waves = picture_phases(z, config)
    shift, joint = _table(cells, z.device)
    centre = torch.tensor(cells["centre"], dtype=torch.float64, device=z.device)
    _, _, h, w = z.shape
    out = []
    for i in range(len(z)):
        corners = phases[i][:, [0, 0, -1, -1], [0, -1, 0, -1]]  # phases are affine: their extremes
        low = torch.floor(corners.amin(1)).long() - 2
        rows, cols = (torch.floor(corners.amax(1)).long() + 3 - low).tolist()
        grid = torch.stack(torch.meshgrid(torch.arange(rows, device=z.device), torch.arange(cols, device=z.device),
                                          indexing="ij")).flatten(1) + low[:, None]
        at = torch.linalg.solve(waves[i], grid.double() + centre[:, None] - start[i, :, None])  # px
        iy = torch.remainder(torch.floor(at[0] / config.stride).long(), h)
        ix = torch.remainder(torch.floor(at[1] / config.stride).long(), w)
        chance = torch.special.ndtr(z[i, 1, iy, ix].double())
        # each pixel's index: its phase's (the shades) on a joint, else its cell's among the grid's
        offset = ((shift[0] + low[0]) * cols + shift[1] + low[1] - BINS * BINS).float()
        whole, place = (part[0] for part in _bins(phases[i:i + 1]))
        out.append((torch.where(joint[place], place, (whole[0] * cols + whole[1] - offset[place]).long()), chance))
    return out


def tint(z: torch.Tensor, config, cells: dict, offsets: list[list[float]],
         joints: list[list[float]] | None = None,
         layout: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """[B, C, H, W] each pixel's cell offset for the picture of noise z: one of the offsets [C, N],
    picked per cell by `tint_layout` (given as `layout`, or worked out here); on joints, `joints`
    (`joint_shades`) or zero. Worked out once per cell, then spread to its pixels by one index per
    pixel. A large picture calibrated a few channels at a time works its layout out once (2048² bricks,
    five channel groups: 0.85 s of 4.2 s where each group worked it out)."""
    offsets = torch.tensor(offsets, dtype=torch.float32, device=z.device)
    shades = _shades(_table(cells, z.device)[1], joints, len(offsets))
    n = offsets.shape[1]
    out = []
    for index, chance in layout or tint_layout(z, config, cells):
        values = torch.cat([shades, offsets[:, (chance * n).long().clamp_(max=n - 1)]], 1)
        out.append(values.index_select(1, index.flatten()).view(-1, *index.shape))
    return torch.stack(out)
