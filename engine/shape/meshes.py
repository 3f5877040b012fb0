"""Reading, cleaning and normalising meshes.

Meshes come from files (OBJ, STL, PLY, GLB/GLTF, OFF — anything trimesh reads) or
as arrays (vertices float N×3, faces int M×3, e.g. sent by the Blender add-on).
A bad mesh never raises out of `load_mesh_folder`: it is skipped and reported with
the reason. Single meshes go through `clean_mesh`, which raises `MeshError` with a
message meant for the user (`MeshTooLarge` when over a limit below).

Work is bounded by the input: a mesh file over MAX_FILE_BYTES, or a mesh over MAX_VERTICES
or MAX_FACES, is refused before it is cleaned; repair is linear in the mesh (only holes of
three or four edges are closed, and only while the boundary is small); voxelisation refuses
meshes that would cost too much (engine.shape.voxels.MAX_RAY_PAIRS). Inside a `cancellable`
block every stage ends at a `checkpoint`, which raises once the op is cancelled.

Conventions: Z is up (Blender's). Files of the formats that are Y up by convention (glTF by
its specification, OBJ by custom; Atelier writes both Y up) are turned Z up when read with
up="auto". Normalised meshes are centred on their bounding box and scaled so the longest
side is 1, i.e. they fit [-0.5, 0.5]³ keeping aspect.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import trimesh

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".glb", ".gltf", ".off")
UP_AXES = ("z", "y")
Y_UP_SUFFIXES = (".glb", ".gltf", ".obj")
MAX_VERTICES = 1_000_000
MAX_FACES = 1_000_000
MAX_FILE_BYTES = 64 << 20  # a text mesh format takes about 30-60 bytes per face
MAX_REPAIR_BOUNDARY_EDGES = 100_000  # more open edges than this: no hole filling (voxelising needs none)


class MeshError(ValueError):
    """A mesh that cannot be used, with the reason in words."""


class MeshTooLarge(MeshError):
    """A mesh over one of the stated limits; the message names it."""


_check: ContextVar[Callable[[], None] | None] = ContextVar("atelier_shape_check", default=None)


@contextmanager
def cancellable(check: Callable[[], None]) -> Iterator[None]:
    """Within this block, long mesh work calls `check` between its stages (it raises to cancel)."""
    token = _check.set(check)
    try:
        yield
    finally:
        _check.reset(token)


def checkpoint() -> None:
    """Stop here if the surrounding `cancellable` block's op was cancelled."""
    check = _check.get()
    if check is not None:
        check()


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


def check_arrays(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Raise MeshError unless vertices are N×3 and faces M×3 integers indexing them, within the limits."""
    v, f = np.asarray(vertices), np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshError(f"vertices must be an N×3 array, got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshError(f"faces must be an M×3 array of vertex indices (triangulate quads first), got shape {f.shape}")
    if len(v) > MAX_VERTICES or len(f) > MAX_FACES:
        raise MeshTooLarge(f"the mesh has {len(v):,} vertices and {len(f):,} faces; the limits are {MAX_VERTICES:,} "
                           f"and {MAX_FACES:,}: simplify it (e.g. Blender's Decimate modifier) first")
    if not np.issubdtype(f.dtype, np.integer):
        raise MeshError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise MeshError(f"faces index vertices outside 0..{len(v) - 1} (found {f.min()}..{f.max()})")


def mesh_from_arrays(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    """Check array shapes, index ranges and limits, then clean (see `clean_mesh`)."""
    check_arrays(vertices, faces)
    return clean_mesh(trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=False))


def clean_mesh(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Merge vertices, drop degenerate and duplicate faces, close holes of three or four edges.
    Raises MeshError for empty, non-finite, flat or all-degenerate meshes.

    Orientation is left as it is: voxelising by ray parity ignores it (trimesh's fix_winding
    and fill_holes grow much faster than the mesh on messy input).
    """
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise MeshError("empty mesh: no triangles")
    check_arrays(mesh.vertices, mesh.faces)
    if not np.isfinite(mesh.vertices).all():
        raise MeshError("vertex coordinates contain NaN or infinity")
    mesh = mesh.copy()
    mesh.merge_vertices()
    checkpoint()
    mesh.update_faces(mesh.nondegenerate_faces() & mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    checkpoint()
    if len(mesh.faces) == 0:
        raise MeshError("every triangle is degenerate (zero area)")
    extents = mesh.extents
    if extents.max() <= 0 or extents.min() <= 1e-6 * extents.max():
        raise MeshError(f"flat mesh (extents {np.round(extents, 6).tolist()}): it has no inside to voxelise")
    patches = small_hole_patches(mesh)
    checkpoint()
    if len(patches):
        mesh = trimesh.Trimesh(mesh.vertices, np.vstack([mesh.faces, patches]), process=False)
    return mesh


def small_hole_patches(mesh: trimesh.Trimesh) -> np.ndarray:
    """Triangles (K×3) closing each hole of three or four boundary edges (a missing triangle or
    quad), in time linear in the boundary; none when the boundary has over MAX_REPAIR_BOUNDARY_EDGES."""
    boundary = mesh.edges_sorted[trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)]
    if not 3 <= len(boundary) <= MAX_REPAIR_BOUNDARY_EDGES:
        return np.zeros((0, 3), np.int64)
    neighbours: dict[int, list[int]] = defaultdict(list)
    for a, b in boundary.tolist():
        neighbours[a].append(b)
        neighbours[b].append(a)
    seen: set[int] = set()
    patches = []
    for start, ends in neighbours.items():
        if start in seen or len(ends) != 2:
            continue
        cycle, previous, current = [start], start, ends[0]
        while current != start and len(cycle) <= 4 and len(neighbours[current]) == 2:
            cycle.append(current)
            a, b = neighbours[current]
            previous, current = current, (b if a == previous else a)
        seen.update(cycle)
        if current == start and len(cycle) in (3, 4):
            patches.append(cycle[:3])
            if len(cycle) == 4:
                patches.append([cycle[0], cycle[2], cycle[3]])
    return np.array(patches, np.int64).reshape(-1, 3)


def file_up(path: str | Path, up: str = "auto") -> str:
    """The up axis of a mesh file: `up` itself, or for "auto" its format's convention."""
    if up == "auto":
        return "y" if Path(path).suffix.lower() in Y_UP_SUFFIXES else "z"
    if up not in UP_AXES:
        raise ValueError(f"up axis must be auto or one of {UP_AXES}, got {up!r}")
    return up


def z_up(vertices: np.ndarray, up: str) -> np.ndarray:
    """Vertices turned Z up from `up`: Y up (x, y, z) becomes (x, -z, y), a rotation about X."""
    v = np.asarray(vertices)
    return np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1) if up == "y" else v


def read_mesh_arrays(path: str | Path, up: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """A mesh file as the arrays a client sends: float32 vertices (Z up, the file's size and place kept)
    and int32 triangles. Raises MeshError (with the file's name) when it cannot be read or used."""
    try:
        mesh = load_mesh_file(path)
    except MeshError as e:
        raise type(e)(f"{Path(path).name}: {e}") from None
    vertices = z_up(np.asarray(mesh.vertices), file_up(path, up))
    return np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(mesh.faces, np.int32)


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
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise MeshTooLarge(f"the file has {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}: simplify the mesh")
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
