"""Occupancy grid -> watertight triangle mesh, and mesh export.

Marching cubes (scikit-image, Lewiner's topologically consistent variant) runs on the
grid padded with one layer of empty voxels, so the surface always closes. The mesh
lives in the unit cube [-0.5, 0.5]³ (Z up), faces wound counter-clockwise seen from
outside. Optional: keep only the largest component, Taubin smoothing (shrinks far
less than Laplacian smoothing), and decimation with manifold3d, which keeps the
mesh closed and moves the surface by less than the tolerance.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import manifold3d
import numpy as np
import trimesh
from skimage.measure import marching_cubes

EXPORT_SUFFIXES = (".glb", ".obj", ".ply")


class Mesh(NamedTuple):
    vertices: np.ndarray  # float32 N×3
    faces: np.ndarray     # int32 M×3

    @property
    def empty(self) -> bool:
        return len(self.faces) == 0


def empty_mesh() -> Mesh:
    return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))


def _largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    return max(parts, key=lambda m: abs(m.volume))


def _decimate(mesh: trimesh.Trimesh, tolerance: float) -> trimesh.Trimesh:
    solid = manifold3d.Manifold(manifold3d.Mesh(np.asarray(mesh.vertices, np.float32),
                                                np.asarray(mesh.faces, np.uint32)))
    if solid.status() != manifold3d.Error.NoError:
        return mesh  # not a manifold (should not happen for marching cubes output); leave as is
    out = solid.simplify(tolerance).to_mesh()
    return trimesh.Trimesh(np.asarray(out.vert_properties)[:, :3], np.asarray(out.tri_verts), process=False)


def grid_to_mesh(occupancy: np.ndarray, *, level: float = 0.5, keep: str = "largest",
                 smooth: int = 0, decimate: float = 0.0) -> Mesh:
    """Surface of `occupancy` (R×R×R probabilities or 0/1, [x, y, z]) at `level`.

    keep: "largest" (one component) or "all". smooth: Taubin iterations (0 = none).
    decimate: tolerance in unit-cube units (e.g. 0.005; 0 = none).
    Returns an empty Mesh when nothing reaches `level`.
    """
    if keep not in ("largest", "all"):
        raise ValueError(f"keep must be 'largest' or 'all', got {keep!r}")
    grid = np.asarray(occupancy, np.float32)
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        raise ValueError(f"occupancy must be a cubic R×R×R grid, got shape {grid.shape}")
    if not (grid > level).any():
        return empty_mesh()
    res = grid.shape[0]
    padded = np.pad(grid, 1, constant_values=0.0)
    verts, faces, _, _ = marching_cubes(padded, level=level, method="lewiner")
    # Padded index j is voxel j - 1, whose centre sits at (j - 1 + 0.5) / R - 0.5.
    verts = (verts - 0.5) / res - 0.5
    mesh = trimesh.Trimesh(verts, faces, process=False)  # marching cubes already shares vertices
    if mesh.volume < 0:
        mesh.invert()
    if keep == "largest":
        mesh = _largest_component(mesh)
    if smooth > 0:
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=int(smooth))
    if decimate > 0:
        mesh = _decimate(mesh, decimate)
    return Mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32))


def export_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write `mesh` as GLB, OBJ or PLY, chosen by the file suffix."""
    path = Path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise ValueError(f"cannot export {path.name}: use a {', '.join(EXPORT_SUFFIXES)} file name")
    if mesh.empty:
        raise ValueError("cannot export an empty mesh (the shape decoded to nothing)")
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(path)
    return path
