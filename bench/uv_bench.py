"""Shape UV bench: unwrap time and chart quality of each UV method on the shipped model's samples.

    /tmp/cpu1 .venv/bin/python bench/uv_bench.py [--resolutions 64 128] [--samples 5] [--repeats 5]

Samples seeds 0..samples-1 of engine/weights/shape-default at each resolution, meshed as the shape ops
deliver them (simplified within 0.002, largest part), and per UV method (engine.shape.uv.METHODS: our
plane charts, xatlas the baseline) prints medians over the samples of: unwrap seconds (each the median of
`repeats` calls), the whole sample → mesh seconds with that method (decode, marching cubes, simplify,
unwrap: what the shape.sample op runs), charts (UV islands), atlas coverage (UV area over the unit
square), texels of a 1024² texture that two islands share (must be 0) and that one island covers twice,
mirrored faces, wall area with world up more than 30° / 90° off +V, flat area with +X more than 30° off
+U, area whose texel density is within 0.8-1.25 of the mean, and the 95th percentile and maximum of the
stretch (the larger over the smaller singular value of the surface-to-UV map). Meshing alone (decode,
marching cubes, simplify) is timed once per sample too.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.shape import uv as uv_module  # noqa: E402
from engine.shape.generation import load  # noqa: E402
from engine.shape.uv import signed_uv_areas, texel_coverage, unwrap, uv_islands  # noqa: E402
from engine.store.checkpoints import load_file  # noqa: E402

MESH = {"decimate": 0.002}  # the shape ops' default mesh options (ops.MESH_PARAMS), UVs aside



def quality(vertices: np.ndarray, faces: np.ndarray, face_uvs: np.ndarray) -> dict[str, float]:
    tri, uv = vertices[faces].astype(np.float64), face_uvs.astype(np.float64)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    cross = np.cross(e1, e2)
    area = np.linalg.norm(cross, axis=1) / 2
    up_z = np.abs(cross[:, 2]) / np.maximum(2 * area, 1e-300)
    uv_area = signed_uv_areas(uv)
    labels = uv_islands(vertices, faces, face_uvs)
    hits, shared_texels = texel_coverage(face_uvs, labels)
    shared, twice = int(shared_texels.sum()), int(((hits > 1) & ~shared_texels).sum())
    # The surface-to-UV map of each face: its singular values, over the mean density.
    t1, t2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    x_axis = e1 / np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-300)
    y_axis = np.cross(cross / np.maximum(2 * area[:, None], 1e-300), x_axis)
    p1 = np.stack([np.einsum("ij,ij->i", e1, x_axis), np.zeros(len(e1))], 1)
    p2 = np.stack([np.einsum("ij,ij->i", e2, x_axis), np.einsum("ij,ij->i", e2, y_axis)], 1)
    det = p1[:, 0] * p2[:, 1] - p1[:, 1] * p2[:, 0]
    ok = (area > 1e-12) & (np.abs(uv_area) > 1e-14)
    det = np.where(ok, det, 1.0)
    # J maps surface (x, y) to UV: [t1 t2] = J [p1 p2].
    jac = np.stack([np.stack([t1[:, 0] * p2[:, 1] - t2[:, 0] * p1[:, 1], t2[:, 0] * p1[:, 0] - t1[:, 0] * p2[:, 0]], 1),
                    np.stack([t1[:, 1] * p2[:, 1] - t2[:, 1] * p1[:, 1], t2[:, 1] * p1[:, 0] - t1[:, 1] * p2[:, 0]], 1)],
                   1) / det[:, None, None]
    sv = np.linalg.svd(jac, compute_uv=False)
    stretch = np.where(ok, sv[:, 0] / np.maximum(sv[:, 1], 1e-300), 1.0)
    density = np.sqrt(np.abs(uv_area) / np.maximum(area, 1e-300)) / np.sqrt(np.abs(uv_area).sum() / area.sum())
    w = area * ok
    order = np.argsort(stretch)
    cum = np.cumsum(w[order]) / w.sum()
    # World up (+Z) and +X as they point in the texture, per face.
    def gradient(axis: int) -> np.ndarray:
        (a, b), (c, d) = t1.T, t2.T
        r1, r2 = e1[:, axis], e2[:, axis]
        den = np.where(ok, a * d - b * c, 1.0)
        return np.stack([(r1 * d - r2 * b) / den, (a * r2 - c * r1) / den], axis=1)
    up, across = gradient(2), gradient(0)
    off_v = np.degrees(np.abs(np.arctan2(up[:, 0], up[:, 1])))
    off_u = np.degrees(np.abs(np.arctan2(across[:, 1], across[:, 0])))
    wall, flat = (up_z < 0.7) & ok, (up_z > 0.9) & ok
    return {"charts": len(np.unique(labels)), "coverage": float(np.abs(uv_area).sum()),
            "shared_texels": shared, "twice_texels": twice, "mirrored": float((uv_area < 0).mean()),
            "wall_off30": float(area[wall & (off_v > 30)].sum() / max(area[wall].sum(), 1e-300)),
            "wall_off90": float(area[wall & (off_v > 90)].sum() / max(area[wall].sum(), 1e-300)),
            "flat_off30": float(area[flat & (off_u > 30)].sum() / max(area[flat].sum(), 1e-300)),
            "density_ok": float(area[(density > 0.8) & (density < 1.25)].sum() / area.sum()),
            "stretch95": float(stretch[order][np.searchsorted(cum, 0.95)]), "stretch_max": float(stretch.max())}


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "engine" / "weights" / "shape-default.safetensors")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(uv_module.METHODS))
    args = parser.parse_args(argv)
    metadata, weights = load_file(args.weights)
    model = load(metadata["config"], weights, "cpu")
    print(f"model: {args.weights.name}; samples {args.samples}, unwrap timed {args.repeats}× each; medians")
    model.sample(0, 1, resolution=64, **MESH)  # warm up
    for res in args.resolutions:
        meshes, mesh_s = [], []
        for seed in range(args.samples):
            start = time.perf_counter()
            mesh = model.sample(seed, 1, resolution=res, **MESH)[0]
            mesh_s.append(time.perf_counter() - start)
            meshes.append(mesh)
        faces = statistics.median(len(m.faces) for m in meshes)
        print(f"\n{res}³: {faces:.0f} triangles (median), decode + marching cubes + simplify "
              f"{statistics.median(mesh_s):.3f} s")
        for method in args.methods:
            rows: dict[str, list[float]] = {}
            default = uv_module.DEFAULT_METHOD
            uv_module.DEFAULT_METHOD = method
            try:
                for seed, mesh in enumerate(meshes):
                    unwrap(mesh.vertices, mesh.faces, method=method)  # warm up
                    rows.setdefault("unwrap_s", []).append(
                        timed(lambda m=mesh, k=method: unwrap(m.vertices, m.faces, method=k), args.repeats))
                    rows.setdefault("sample_mesh_s", []).append(
                        timed(lambda s=seed, r=res: model.sample(s, 1, resolution=r, uvs=True, **MESH), 1))
                    for key, value in quality(mesh.vertices, mesh.faces,
                                              unwrap(mesh.vertices, mesh.faces, method=method)).items():
                        rows.setdefault(key, []).append(value)
            finally:
                uv_module.DEFAULT_METHOD = default
            print(f"  {method:<8}" + "  ".join(f"{k} {statistics.median(v):.4g}" for k, v in rows.items()))
            print(f"  {'':<8}max: " + "  ".join(f"{k} {max(v):.4g}" for k, v in rows.items()
                                               if k in ("shared_texels", "twice_texels", "mirrored", "stretch_max",
                                                        "wall_off90")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
