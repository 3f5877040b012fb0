"""Occupancy grid -> watertight triangle mesh, and mesh export.

Marching cubes (scikit-image, Lewiner's topologically consistent variant) runs on the
grid padded with one layer of empty voxels, so the surface always closes. The mesh
lives in the unit cube [-0.5, 0.5]³ (Z up), faces wound counter-clockwise seen from
outside. Optional: keep only the largest component (counting the parts dropped), Taubin
smoothing (shrinks far less than Laplacian smoothing), simplification with manifold3d
(keeps the mesh closed and moves the surface by less than a tolerance, raised until a face
budget is met), and UVs (engine.shape.uv: plane charts), carried per face corner so the mesh
stays welded; files get seam vertices split when written.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import manifold3d
import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import marching_cubes

from engine.shape.meshes import Y_UP_SUFFIXES
from engine.shape.uv import split_seams, unwrap

EXPORT_SUFFIXES = (".glb", ".obj", ".ply")


class _Surface(NamedTuple):
    vertices: np.ndarray  # float32 N×3
    faces: np.ndarray     # int32 M×3


class Mesh(_Surface):
    """A triangle mesh. It unpacks as (vertices, faces), the two arrays every shape op takes, and
    carries its UVs per face corner (float32 M×3×2 in [0, 1], or None) and how many parts were
    dropped when only the largest was kept."""

    face_uvs: np.ndarray | None = None
    dropped_parts: int = 0

    def __new__(cls, vertices: np.ndarray, faces: np.ndarray, face_uvs: np.ndarray | None = None,
                dropped_parts: int = 0) -> "Mesh":
        mesh = super().__new__(cls, vertices, faces)
        mesh.face_uvs, mesh.dropped_parts = face_uvs, dropped_parts
        return mesh

    @property
    def empty(self) -> bool:
        return len(self.faces) == 0


def empty_mesh() -> Mesh:
    return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))


def _signed_volumes(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-face signed volume of the tetrahedron (origin, triangle); their sum is the mesh volume."""
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0


def _largest_component(vertices: np.ndarray, faces: np.ndarray,
                       volumes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The connected piece of largest enclosed volume, and how many others there were.
    Marching-cubes meshes share vertices between a piece's triangles, so vertex connectivity
    finds the pieces (and is ~50× faster than trimesh's split, which builds a mesh per piece)."""
    n = len(vertices)
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    if count <= 1:
        return vertices, faces, 0
    face_label = labels[faces[:, 0]]
    if volumes is None:
        volumes = _signed_volumes(vertices, faces)
    volumes = np.bincount(face_label, weights=volumes, minlength=count)
    kept = faces[face_label == int(np.argmax(np.abs(volumes)))]
    used = np.unique(kept)
    remap = np.full(n, -1, np.int64)
    remap[used] = np.arange(len(used))
    # Marching cubes makes no vertex without a face: a piece's vertices are those of its faces.
    return vertices[used], remap[kept], count - 1


def _simplify(vertices: np.ndarray, faces: np.ndarray, tolerance: float,
              max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Simplified within `tolerance`; then, while over `max_faces` (0 = no budget), again at a
    tolerance half as large again each time (the surface moves by at most ~3× the last one)."""
    solid = manifold3d.Manifold(manifold3d.Mesh(np.asarray(vertices, np.float32), np.asarray(faces, np.uint32)))
    if solid.status() != manifold3d.Error.NoError:
        return vertices, faces  # not a manifold (should not happen for marching cubes output); leave as is
    if tolerance > 0:
        solid = solid.simplify(tolerance)
    step = max(tolerance, 1e-4)
    while max_faces and solid.num_tri() > max_faces and step < 0.5:
        step *= 1.5
        solid = solid.simplify(step)
    out = solid.to_mesh()
    return np.asarray(out.vert_properties)[:, :3], np.asarray(out.tri_verts)


def grid_to_mesh(occupancy: np.ndarray, *, level: float = 0.5, keep: str = "largest", smooth: int = 0,
                 decimate: float = 0.0, max_faces: int = 0, uvs: bool = False) -> Mesh:
    """Surface of `occupancy` (R×R×R probabilities or 0/1, [x, y, z]) at `level`.

    keep: "largest" (one component; the Mesh counts the parts dropped) or "all".
    smooth: Taubin iterations (0 = none). decimate: tolerance in unit-cube units (e.g. 0.001;
    0 = none). max_faces: simplify further until at most this many triangles (0 = no budget).
    uvs: unwrap (engine.shape.uv) into per-corner UVs. Returns an empty Mesh when nothing reaches `level`.
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
    faces = np.asarray(faces, np.int64)  # marching cubes already shares vertices
    volumes = _signed_volumes(verts, faces)
    if volumes.sum() < 0:
        faces, volumes = faces[:, ::-1], -volumes  # wind counter-clockwise seen from outside
    dropped = 0
    if keep == "largest":
        verts, faces, dropped = _largest_component(verts, faces, volumes)
    if smooth > 0:
        mesh = trimesh.Trimesh(verts, faces, process=False)
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=int(smooth))
        verts = mesh.vertices
    if decimate > 0 or max_faces > 0:
        verts, faces = _simplify(verts, faces, decimate, max_faces)
    verts, faces = np.ascontiguousarray(verts, np.float32), np.ascontiguousarray(faces, np.int32)
    return Mesh(verts, faces, unwrap(verts, faces) if uvs else None, dropped)


# GLB and OBJ are written Y up (engine.shape.meshes.Y_UP_SUFFIXES: glTF by its specification, OBJ by
# custom; Blender's importers turn both to Z up). PLY has no convention; Blender reads it Z up, so it stays.
def to_y_up(vertices: np.ndarray) -> np.ndarray:
    """Z-up (x, y, z) to Y-up (x, z, -y): a rotation, so winding and volume are kept."""
    v = np.asarray(vertices)
    return np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)


def export_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write `mesh` (Z up) as GLB, OBJ or PLY, chosen by the file suffix; GLB and OBJ are
    written Y up, as those formats expect, so the shape stands upright wherever it opens.
    UVs, where the mesh has them, go in as texture coordinates (vertices split on seams)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(f"cannot export {path.name}: use a {', '.join(EXPORT_SUFFIXES)} file name")
    if mesh.empty:
        raise ValueError("cannot export an empty mesh (the shape decoded to nothing)")
    path.parent.mkdir(parents=True, exist_ok=True)
    vertices, faces, visual = mesh.vertices, mesh.faces, None
    if mesh.face_uvs is not None:
        vertices, faces, uv = split_seams(vertices, faces, mesh.face_uvs)
        visual = trimesh.visual.TextureVisuals(uv=uv)
    if suffix in Y_UP_SUFFIXES:
        vertices = to_y_up(vertices)
    trimesh.Trimesh(vertices, faces, visual=visual, process=False).export(path)
    return path
