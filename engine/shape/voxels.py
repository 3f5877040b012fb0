"""Solid voxelisation of normalised meshes, and voxel-grid augmentation.

Grids are indexed [x, y, z] (Z up) and cover the unit cube [-0.5, 0.5]³; voxel i's
centre is at (i + 0.5) / R - 0.5. A voxel is occupied when its centre is inside
the mesh. Inside-ness comes from ray parity along each of the three axes with a
majority vote (Nooruddin & Turk 2003), so a small hole or a stray face in a
non-watertight mesh flips at most one vote.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Rays are shifted off the voxel-centre lattice by this fraction of a voxel so that
# they do not pass exactly through the edges of axis-aligned parts.
_RAY_JITTER = (0.0123457, 0.0234568)


def _parity(tri: np.ndarray, res: int, axis: int) -> np.ndarray:
    """Inside test by counting crossings of rays cast along `axis` through voxel centres."""
    u_ax, v_ax = [a for a in range(3) if a != axis]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    # Continuous voxel coordinates of the triangle's projection onto the (u, v) plane.
    pu = (tri[:, :, u_ax] + 0.5) * res - 0.5 - _RAY_JITTER[0]
    pv = (tri[:, :, v_ax] + 0.5) * res - 0.5 - _RAY_JITTER[1]
    u0 = np.clip(np.ceil(pu.min(1)), 0, res).astype(np.int64)
    u1 = np.clip(np.floor(pu.max(1)), -1, res - 1).astype(np.int64)
    v0 = np.clip(np.ceil(pv.min(1)), 0, res).astype(np.int64)
    v1 = np.clip(np.floor(pv.max(1)), -1, res - 1).astype(np.int64)
    nu, nv = np.maximum(u1 - u0 + 1, 0), np.maximum(v1 - v0 + 1, 0)
    counts = nu * nv
    t = np.repeat(np.arange(len(tri)), counts)  # one row per (triangle, candidate ray)
    if len(t) == 0:
        return np.zeros((res,) * 3, bool)
    local = np.arange(len(t)) - np.repeat(np.cumsum(counts) - counts, counts)
    iu = u0[t] + local // nv[t]
    iv = v0[t] + local % nv[t]
    qu, qv = iu + _RAY_JITTER[0], iv + _RAY_JITTER[1]
    # Barycentric coordinates of the ray point in the projected triangle.
    x0, y0 = pu[t, 0], pv[t, 0]
    e1u, e1v = pu[t, 1] - x0, pv[t, 1] - y0
    e2u, e2v = pu[t, 2] - x0, pv[t, 2] - y0
    det = e1u * e2v - e2u * e1v
    ok = np.abs(det) > 1e-12
    det = np.where(ok, det, 1.0)
    du, dv = qu - x0, qv - y0
    s = (du * e2v - e2u * dv) / det
    r = (e1u * dv - du * e1v) / det
    hit = ok & (s >= 0) & (r >= 0) & (s + r <= 1)
    t, iu, iv, s, r = t[hit], iu[hit], iv[hit], s[hit], r[hit]
    depth = a[t, axis] + s * (b[t, axis] - a[t, axis]) + r * (c[t, axis] - a[t, axis])
    # Count crossings below each voxel centre along the ray: a crossing at depth d
    # lies below centres k >= ceil((d + 0.5) * res - 0.5).
    k = np.clip(np.ceil((depth + 0.5) * res - 0.5), 0, res).astype(np.int64)
    crossings = np.zeros((res, res, res + 1), np.int32)
    np.add.at(crossings, (iu, iv, k), 1)
    inside = (np.cumsum(crossings, axis=2)[:, :, :res] % 2) == 1
    # inside is indexed [u, v, axis]; move the ray axis back into place.
    return np.moveaxis(inside, 2, axis)


def voxelise(vertices: np.ndarray, faces: np.ndarray, resolution: int = 32) -> np.ndarray:
    """Solid occupancy (bool R×R×R, [x, y, z]) of a mesh already normalised into [-0.5, 0.5]³."""
    if resolution < 4:
        raise ValueError(f"voxel resolution must be at least 4, got {resolution}")
    tri = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    votes = sum(_parity(tri, resolution, axis).astype(np.int8) for axis in range(3))
    return votes >= 2


def augment(grids: torch.Tensor, keys: torch.Tensor, *, rotate: str = "quarter",
            mirror: bool = True, scale: float = 0.1) -> torch.Tensor:
    """Augmented copies of occupancy grids (B×1×R×R×R float), each a pure function of its key.

    rotate: "none", "quarter" (multiples of 90° about Z, exact) or "free" (any angle).
    mirror: flip X with probability 1/2 (with Z rotations this covers every vertical mirror).
    scale: anisotropic scaling by up to ±scale per axis. A shape that no longer fits the
    cube after rotating and scaling is shrunk until it does.
    Nearest-voxel resampling: unlike trilinear-then-threshold it never erodes thin parts.
    """
    if rotate not in ("none", "quarter", "free"):
        raise ValueError(f"rotate must be 'none', 'quarter' or 'free', got {rotate!r}")
    b, res = grids.shape[0], grids.shape[-1]
    mats = np.zeros((b, 3, 3))
    for i, key in enumerate(keys.tolist()):
        rng = np.random.default_rng([int(key) & 0xFFFFFFFFFFFF, 0xA6])
        angle = {"none": 0.0, "quarter": rng.integers(4) * np.pi / 2,
                 "free": rng.uniform(0, 2 * np.pi)}[rotate]
        c, s = np.cos(angle), np.sin(angle)
        m = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        m = m @ np.diag(rng.uniform(1 - scale, 1 + scale, size=3))
        if mirror and rng.random() < 0.5:
            m = m @ np.diag([-1.0, 1, 1])
        mats[i] = m
    # Half-extents of each shape's occupied box, in grid_sample's [-1, 1] units.
    occ = grids[:, 0] > 0.5
    half = np.ones((b, 3))
    for ax in range(3):
        other = tuple(d for d in (1, 2, 3) if d != ax + 1)
        idx = occ.any(dim=other).float() * torch.arange(1, res + 1)
        hi = idx.amax(dim=1)
        lo = torch.where(idx > 0, idx, torch.full_like(idx, res + 1)).amin(dim=1)
        half[:, ax] = np.maximum(((hi - lo + 1) / res).numpy(), 1.0 / res)
    new_half = np.abs(mats) @ half[:, :, None]
    fit = np.minimum(1.0, 1.0 / new_half[:, :, 0].max(1))
    mats *= fit[:, None, None]
    # grid_sample wants output->input coordinates, and orders them (z, y, x) for our [x, y, z].
    inv = np.linalg.inv(mats)[:, ::-1, ::-1]
    theta = torch.zeros(b, 3, 4, dtype=grids.dtype)
    theta[:, :, :3] = torch.from_numpy(inv.copy()).to(grids.dtype)
    flow = F.affine_grid(theta.to(grids.device), list(grids.shape), align_corners=False)
    out = F.grid_sample(grids, flow, mode="nearest", padding_mode="zeros", align_corners=False)
    return out
