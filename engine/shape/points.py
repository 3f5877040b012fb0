"""Training points of the implicit decoder: where to ask "inside?" about a shape, and the answers.

    points, inside = labelled_points(vertices, faces, count=8192, seed=0)   # float16 K×3, bool K

Half the points lie near the surface (area-uniform surface samples moved by a Gaussian of
NEAR_SIGMA), half anywhere in the unit cube. Labels come from a solid voxelisation four times
finer than the encoder's grid, 128³ for the default 32³ (engine/shape/voxels.py, ray parity with a majority vote): it needs no
watertight mesh, shares the encoder input's notion of inside, and costs about 0.2-0.6 s per
mesh on one core, once, since the points are cached with the voxel grids. Exact tests per point
(trimesh's `contains`) need a watertight mesh and were slower without embree.
"""
from __future__ import annotations

import numpy as np
import trimesh

from engine.shape.voxels import voxelise

NEAR_SIGMA = 0.01  # unit-cube units: about one voxel at 128³ and a third of one at 32³


def label_resolution(resolution: int) -> int:
    """The labels' voxelisation for an encoder grid of `resolution`³."""
    return min(4 * resolution, 128)


def labelled_points(vertices: np.ndarray, faces: np.ndarray, count: int = 8192, seed: int = 0,
                    resolution: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """`count` points (float16 K×3, [x, y, z] in [-0.5, 0.5]³) and whether each is inside the mesh,
    for a mesh already normalised into the unit cube, labelled by a `resolution`³ voxelisation."""
    rng = np.random.default_rng(seed)
    near = count // 2
    surface, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), near, seed=seed)
    points = np.concatenate([surface + rng.normal(0.0, NEAR_SIGMA, (near, 3)),
                             rng.uniform(-0.5, 0.5, (count - near, 3))])
    points = np.clip(points, -0.5, 0.5 - 1e-6)
    return points.astype(np.float16), inside(voxelise(vertices, faces, resolution), points)


def inside(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The occupancy of the voxel each point falls in (nearest-voxel lookup in an R³ grid)."""
    res = grid.shape[0]
    index = np.clip(np.floor((np.asarray(points, np.float64) + 0.5) * res), 0, res - 1).astype(np.int64)
    return grid[index[:, 0], index[:, 1], index[:, 2]]
