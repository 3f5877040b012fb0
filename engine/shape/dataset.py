"""Voxel training sets from a mesh folder, from procedural shapes, or from arrays; with
`points=K`, also K labelled points per shape for the implicit decoder (engine/shape/points.py).

A folder's voxel grids are cached on disk, one entry per source file, keyed by the
file's relative path and validated by a hash of its bytes: an unchanged file is
never re-read, an edited one is voxelised again. Skipped files are cached with
their reason, so they are reported on every load without being parsed again.

    build_from_folder("~/meshes", resolution=32)             -> ShapeSet
    build_procedural(500, seed=0, resolution=32, points=8192) -> ShapeSet with .points, .inside
"""
from __future__ import annotations

import hashlib
import io
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.ops import Cancelled
from engine.shape.meshes import (
    MESH_SUFFIXES,
    MeshError,
    Skipped,
    file_up,
    list_mesh_files,
    load_mesh_file,
    mesh_from_arrays,
    normalise,
)
from engine.shape.points import label_resolution, labelled_points
from engine.shape.procedural import procedural_meshes
from engine.shape.voxels import voxelise
from engine.store.atomic import write_atomic

# Bump when voxelisation, cleaning or point sampling changes, so old cache entries are rebuilt.
CACHE_VERSION = 3


@dataclass
class ShapeSet:
    grids: np.ndarray  # (N, R, R, R) bool, [x, y, z], Z up
    names: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0
    points: np.ndarray | None = None  # (N, K, 3) float16 in the unit cube, when asked for
    inside: np.ndarray | None = None  # (N, K) bool: is each point inside its shape

    def __len__(self) -> int:
        return len(self.names)

    def split(self, holdout: float = 0.1, min_holdout: int = 1) -> tuple["ShapeSet", "ShapeSet"]:
        """(train, held-out): every k-th shape in name order is held out, so the split is
        stable when shapes are added. Sets under 2 * min_holdout + 1 shapes hold nothing out."""
        n = len(self)
        if n < 2 * min_holdout + 1 or holdout <= 0:
            return self, ShapeSet(self.grids[:0], [])
        stride = max(2, int(round(1 / holdout)))
        held = np.zeros(n, bool)
        held[stride - 1::stride] = True
        if held.sum() < min_holdout:
            held[-min_holdout:] = True
        pick = lambda mask: ShapeSet(self.grids[mask], [nm for nm, m in zip(self.names, mask) if m],
                                     points=None if self.points is None else self.points[mask],
                                     inside=None if self.inside is None else self.inside[mask])
        return pick(~held), pick(held)


def concat(sets: list[ShapeSet]) -> ShapeSet:
    """One set of several (of one resolution), in the given order; a single set is returned as is."""
    if len(sets) == 1:
        return sets[0]
    has_points = all(s.points is not None for s in sets)
    return ShapeSet(np.concatenate([s.grids for s in sets]), [n for s in sets for n in s.names],
                    [k for s in sets for k in s.skipped], sum(s.cache_hits for s in sets),
                    sum(s.cache_misses for s in sets),
                    np.concatenate([s.points for s in sets]) if has_points else None,
                    np.concatenate([s.inside for s in sets]) if has_points else None)


def _shape(mesh, resolution: int, points: int, seed: int) -> tuple[np.ndarray, tuple | None]:
    """The grid of a normalised mesh and, when points > 0, its labelled points."""
    grid = voxelise(mesh.vertices, mesh.faces, resolution)
    if not points or not grid.any():
        return grid, None
    return grid, labelled_points(mesh.vertices, mesh.faces, points, seed, label_resolution(resolution))


def _stack(out: ShapeSet, grids: list, labelled: list, points: int) -> ShapeSet:
    if grids:
        out.grids = np.stack(grids)
        if points:
            out.points = np.stack([p for p, _ in labelled])
            out.inside = np.stack([i for _, i in labelled])
    return out


def default_cache_dir() -> Path:
    return Path(os.environ.get("ATELIER_CACHE", Path.home() / ".cache" / "atelier")) / "voxels"


def _entry_path(cache: Path, name: str) -> Path:
    return cache / (hashlib.sha1(name.encode()).hexdigest()[:20] + ".npz")


def _read_entry(path: Path, source_hash: str, points: int) -> tuple | None:
    """(grid, labelled points or None, None) or (None, None, skip reason) from a valid cache entry;
    None when stale, unreadable, or without the points asked for."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["source_hash"]) != source_hash or int(z["version"]) != CACHE_VERSION:
                return None
            if str(z["skip_reason"]):
                return None, None, str(z["skip_reason"])
            if points and len(z["points"]) != points:
                return None
            res = int(z["resolution"])
            grid = np.unpackbits(z["bits"])[: res ** 3].reshape(res, res, res).astype(bool)
            labelled = (z["points"], np.unpackbits(z["inside"])[:points].astype(bool)) if points else None
            return grid, labelled, None
    except (OSError, KeyError, ValueError):
        return None


def _write_entry(path: Path, source_hash: str, resolution: int, grid: np.ndarray | None,
                 labelled: tuple | None, reason: str) -> None:
    bits = np.packbits(grid.ravel()) if grid is not None else np.zeros(0, np.uint8)
    points, inside = labelled or (np.zeros((0, 3), np.float16), np.zeros(0, bool))
    _save_npz(path, source_hash=source_hash, version=CACHE_VERSION, resolution=resolution,
              skip_reason=reason, bits=bits, points=points, inside=np.packbits(inside))


def _save_npz(path: Path, **arrays) -> None:
    """np.savez through a temp file of its own: a crash never leaves a half-written entry, and two
    trainings filling the same cache at once never rename each other's temp away."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def build_from_folder(folder: str | Path, resolution: int = 32, up: str = "auto",
                      cache_dir: str | Path | None = None, points: int = 0) -> ShapeSet:
    """Voxelise every mesh under `folder` (and label `points` points of each), reusing the cached
    entries of unchanged files."""
    folder = Path(folder).expanduser().resolve()
    files = list_mesh_files(folder)
    if not files:
        raise FileNotFoundError(f"no mesh files ({', '.join(MESH_SUFFIXES)}) under {folder}")
    key = hashlib.sha1(f"{folder}|{resolution}|{up}".encode()).hexdigest()[:16]
    cache = Path(cache_dir or default_cache_dir()) / key
    cache.mkdir(parents=True, exist_ok=True)
    out = ShapeSet(np.zeros((0,) + (resolution,) * 3, bool), [])
    grids, labelled_all = [], []
    for path in files:
        name = path.relative_to(folder).as_posix()
        try:
            source_hash = _file_hash(path)
        except OSError as e:
            out.skipped.append(Skipped(name, f"could not read the file ({e.strerror or e})"))
            continue
        entry = _entry_path(cache, name)
        cached = _read_entry(entry, source_hash, points)
        if cached is None:
            out.cache_misses += 1
            grid, labelled, reason = None, None, ""
            try:
                mesh = normalise(load_mesh_file(path), file_up(path, up))
                grid, labelled = _shape(mesh, resolution, points, zlib.crc32(name.encode()))
                if not grid.any():
                    grid, reason = None, "voxelises to nothing: open or paper-thin surface with no inside"
            except MeshError as e:
                reason = str(e)
            except Cancelled:
                raise
            except Exception as e:  # one malformed file must not stop training on the others
                reason = f"could not use the mesh ({type(e).__name__}: {str(e)[:200]})"
            _write_entry(entry, source_hash, resolution, grid, labelled, reason)
            cached = (grid, labelled, reason or None)
        else:
            out.cache_hits += 1
        grid, labelled, reason = cached
        if reason:
            out.skipped.append(Skipped(name, reason))
        else:
            grids.append(grid)
            labelled_all.append(labelled)
            out.names.append(name)
    return _stack(out, grids, labelled_all, points)


def build_from_arrays(meshes: list[tuple[np.ndarray, np.ndarray]], resolution: int = 32,
                      names: list[str] | None = None, points: int = 0) -> ShapeSet:
    """Voxelise in-memory meshes (vertices, faces), e.g. objects sent from Blender (Z up)."""
    names = names or [f"mesh_{i}" for i in range(len(meshes))]
    out = ShapeSet(np.zeros((0,) + (resolution,) * 3, bool), [])
    grids, labelled_all = [], []
    for i, (name, (v, f)) in enumerate(zip(names, meshes)):
        try:
            mesh = normalise(mesh_from_arrays(v, f))
            grid, labelled = _shape(mesh, resolution, points, i)
        except MeshError as e:
            out.skipped.append(Skipped(name, str(e)))
            continue
        except Cancelled:
            raise
        except Exception as e:  # one malformed mesh must not stop training on the others
            out.skipped.append(Skipped(name, f"could not use the mesh ({type(e).__name__}: {str(e)[:200]})"))
            continue
        if not grid.any():
            out.skipped.append(Skipped(name, "voxelises to nothing: open or paper-thin surface with no inside"))
            continue
        grids.append(grid)
        labelled_all.append(labelled)
        out.names.append(name)
    return _stack(out, grids, labelled_all, points)


def build_procedural(count: int, seed: int = 0, resolution: int = 32,
                     cache_dir: str | Path | None = None, cache: bool = True, points: int = 0) -> ShapeSet:
    """`count` procedural shapes (see procedural_shapes), cached as one file per (count, seed, R, points)."""
    path = None
    if cache:
        path = Path(cache_dir or default_cache_dir()) / \
            f"procedural_v{CACHE_VERSION}_{count}_{seed}_{resolution}_{points}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                grids = np.unpackbits(z["bits"], axis=1)[:, : resolution ** 3].reshape((count,) + (resolution,) * 3)
                out = ShapeSet(grids.astype(bool), [str(n) for n in z["names"]], cache_hits=1)
                if points:
                    out.points, out.inside = z["points"], np.unpackbits(z["inside"], axis=1)[:, :points].astype(bool)
                return out
    names, grids, labelled = [], [], []
    for i, (name, mesh) in enumerate(procedural_meshes(count, seed)):
        grid, pts = _shape(normalise(mesh), resolution, points, i)
        grids.append(grid)
        labelled.append(pts)
        names.append(name)
    out = _stack(ShapeSet(np.zeros(0), names, cache_misses=1), grids, labelled, points)
    if path is not None:
        extra = {"points": out.points, "inside": np.packbits(out.inside, axis=1)} if points else {}
        _save_npz(path, bits=np.packbits(out.grids.reshape(count, -1), axis=1), names=np.array(names), **extra)
    return out
