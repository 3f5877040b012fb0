"""Shape metrics.

- voxel IoU of reconstructions of held-out shapes (threshold 0.5);
- Chamfer-L1 (mean of both directions' mean nearest-point distances, Euclidean, as in
  Occupancy Networks) and F-score@1 % (threshold 0.01 of the unit cube's side) between the
  reconstructed mesh and the held-out shape's own marching-cubes mesh;
- the share of sampled meshes that are watertight, consistently wound and one piece, as
  decoded (every part: `clean_share`) and as the ops deliver them (largest part kept:
  `delivered_clean_share`);
- coverage and minimum matching distance (Achlioptas et al. 2018) of samples against
  held-out shapes, with Chamfer-L1 between surface point sets as the distance.

All distances are in unit-cube units (shapes are normalised to a longest side of 1).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from engine.shape.meshing import Mesh, grid_to_mesh
from engine.shape.render import render_grids, sheet

if TYPE_CHECKING:
    from engine.shape.generation import ShapeModel


def voxel_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-shape IoU of boolean grids (…×R×R×R); 1.0 where both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    axes = tuple(range(pred.ndim - 3, pred.ndim))
    inter = (pred & target).sum(axes)
    union = (pred | target).sum(axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def surface_points(mesh: Mesh, count: int = 2048, seed: int = 0) -> np.ndarray:
    """`count` points spread uniformly by area over the mesh surface (seeded)."""
    if mesh.empty:
        return np.zeros((0, 3))
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    points, _ = trimesh.sample.sample_surface(tm, count, seed=seed)
    return np.asarray(points)


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cKDTree(b).query(a, k=1)[0]


def chamfer_l1(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return float("inf") if len(a) != len(b) else 0.0
    return 0.5 * float(_nearest(a, b).mean() + _nearest(b, a).mean())


def f_score(pred: np.ndarray, ref: np.ndarray, threshold: float = 0.01) -> float:
    if len(pred) == 0 or len(ref) == 0:
        return 0.0
    precision = float((_nearest(pred, ref) < threshold).mean())
    recall = float((_nearest(ref, pred) < threshold).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def is_clean(mesh: Mesh) -> bool:
    """Watertight, consistently wound, one connected piece."""
    if mesh.empty:
        return False
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    return bool(tm.is_watertight and tm.is_winding_consistent and tm.body_count == 1)


def coverage_mmd(samples: list[np.ndarray], refs: list[np.ndarray]) -> tuple[float, float]:
    """(coverage, MMD): share of reference shapes that are some sample's nearest reference,
    and the mean over references of the distance to their closest sample."""
    d = np.array([[chamfer_l1(s, r) for r in refs] for s in samples])
    coverage = len(set(d.argmin(axis=1).tolist())) / len(refs)
    return coverage, float(d.min(axis=0).mean())


def evaluate_model(model: "ShapeModel", held_out: np.ndarray, *, samples: int = 16,
                   mesh_shapes: int = 16, points: int = 2048, seed: int = 0) -> dict[str, float]:
    """All metrics above for `model` against held-out grids (N×R×R×R bool)."""
    held_out = np.asarray(held_out, bool)
    if len(held_out) == 0:
        raise ValueError("evaluation needs at least one held-out shape")
    probs = model.reconstruct_grids(held_out)
    out = {"iou": float(voxel_iou(probs > 0.5, held_out).mean())}
    chamfer, fscore, ref_points = [], [], []
    for i in range(min(mesh_shapes, len(held_out))):
        ref = surface_points(grid_to_mesh(held_out[i].astype(np.float32), keep="all"), points, seed)
        rec = surface_points(grid_to_mesh(probs[i], keep="all"), points, seed)
        chamfer.append(chamfer_l1(rec, ref))
        fscore.append(f_score(rec, ref))
        ref_points.append(ref)
    out["chamfer_l1"] = float(np.mean(chamfer))
    out["fscore_1pct"] = float(np.mean(fscore))
    sampled_grids = model.decode_grids(model.sample_latents(seed, samples))
    sampled = [grid_to_mesh(g, keep="all") for g in sampled_grids]
    out["clean_share"] = float(np.mean([is_clean(m) for m in sampled]))
    # As the ops deliver meshes by default: the largest part only.
    out["delivered_clean_share"] = float(np.mean([is_clean(grid_to_mesh(g)) for g in sampled_grids]))
    sample_points = [surface_points(m, points // 2, seed) for m in sampled]
    out["coverage"], out["mmd"] = coverage_mmd(sample_points, [r[: points // 2] for r in ref_points])
    return out


def report_sheet(model: "ShapeModel", *, seed: int = 0, samples: int = 8, steps: int = 8,
                 size: int = 128) -> np.ndarray:
    """uint8 picture: a row of samples, then an interpolation row between two seeds."""
    latents = model.sample_latents(seed, samples)
    row1 = render_grids(model.decode_grids(latents), size=size)
    a, b = model.sample_latents(seed + 1, 1)[0], model.sample_latents(seed + 2, 1)[0]
    path = np.stack([model.blend(a, b, t) for t in np.linspace(0, 1, steps)])
    row2 = render_grids(model.decode_grids(path), size=size)
    return sheet([row1, row2])
