"""Reading, cleaning and normalising meshes.

Meshes come from files (OBJ, STL, PLY, GLB/GLTF, OFF — anything trimesh reads) or
as arrays (vertices float N×3, faces int M×3, e.g. sent by the Blender add-on).
A bad mesh never raises out of `load_mesh_folder`: it is skipped and reported with
the reason. Single meshes go through `clean_mesh`, which raises `MeshError` with a
message meant for the user.

Conventions: Z is up (Blender's). Normalised meshes are centred on their bounding
box and scaled so the longest side is 1, i.e. they fit [-0.5, 0.5]³ keeping aspect.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".glb", ".gltf", ".off")
UP_AXES = ("z", "y")


class MeshError(ValueError):
    """A mesh that cannot be used, with the reason in words."""


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


def mesh_from_arrays(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    """Check array shapes and index ranges, then clean (see `clean_mesh`)."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshError(f"vertices must be an N×3 array, got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshError(f"faces must be an M×3 array of vertex indices (triangulate quads first), got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise MeshError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise MeshError(f"faces index vertices outside 0..{len(v) - 1} (found {f.min()}..{f.max()})")
    return clean_mesh(trimesh.Trimesh(v.astype(np.float64), f.astype(np.int64), process=False))


def clean_mesh(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Drop degenerate and duplicate faces, merge vertices, fill small holes, fix winding
    and normals. Raises MeshError for empty, non-finite or all-degenerate meshes."""
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise MeshError("empty mesh: no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise MeshError("vertex coordinates contain NaN or infinity")
    mesh = mesh.copy()
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces() & mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise MeshError("every triangle is degenerate (zero area)")
    extents = mesh.extents
    if extents.max() <= 0 or extents.min() <= 1e-6 * extents.max():
        raise MeshError(f"flat mesh (extents {np.round(extents, 6).tolist()}): it has no inside to voxelise")
    trimesh.repair.fill_holes(mesh)
    trimesh.repair.fix_winding(mesh)
    trimesh.repair.fix_inversion(mesh)
    return mesh


def normalise(mesh: trimesh.Trimesh, up: str = "z") -> trimesh.Trimesh:
    """A copy turned Z-up, centred on its bounding box, longest side scaled to 1."""
    if up not in UP_AXES:
        raise ValueError(f"up axis must be one of {UP_AXES}, got {up!r}")
    mesh = mesh.copy()
    if up == "y":  # Y-up (glTF, most OBJ) to Z-up: (x, y, z) -> (x, -z, y)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
    lo, hi = mesh.bounds
    mesh.apply_translation(-(lo + hi) / 2)
    mesh.apply_scale(1.0 / float((hi - lo).max()))
    return mesh


def load_mesh_file(path: str | Path) -> trimesh.Trimesh:
    """Read one file, merging a scene's geometry into one mesh, and clean it."""
    path = Path(path)
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh raises many types for malformed files
        raise MeshError(f"could not read the file ({type(e).__name__}: {e})") from None
    if not isinstance(loaded, trimesh.Trimesh):
        raise MeshError(f"no triangles in the file (got {type(loaded).__name__})")
    return clean_mesh(loaded)


def list_mesh_files(folder: str | Path) -> list[Path]:
    """Mesh files under `folder` (recursively), sorted, hidden folders ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"mesh folder {folder} does not exist or is not a folder")
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in MESH_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
