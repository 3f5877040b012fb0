"""Shape benchmark: our voxel VAE against a PCA baseline of the same latent size, in one run.

    python bench/shape_bench.py                          # the shipped model, engine/weights/shape-default
    python bench/shape_bench.py --weights my.safetensors --held-out 100
    python bench/shape_bench.py --collection [--minutes 3]   # the real-mesh collection
    python bench/shape_bench.py --ceilings [--model M]       # where the collection's IoU goes
    python bench/shape_bench.py --pieces --model M           # raw samples in one piece, and how varied

--collection trains our model with the plain default command (the 64³ grid VAE with a grid of latents) and
the 32³ VAE with one latent vector that shipped before it (`--set resolution=32 --set latent=vector --set
latent_dim=64`; or with --implicit the implicit decoder, `--set decoder=implicit`),
on the train split of bench/data/meshes, fits PCA-64 to the same meshes, and measures all three on the
held-out split (`collection` below).

Prints, for the VAE and for PCA on voxels (fitted to the VAE's own training shapes, with a
Gaussian over its component scores to sample from):
- held-out voxel IoU, Chamfer-L1 and F-score@1 % (unit-cube units) on unseen procedural shapes;
- the share of sampled meshes that are watertight, consistently wound and one piece, both as
  decoded (all parts) and as delivered (largest part kept, the ops' default);
- coverage and MMD of samples against the held-out shapes;
- sample → mesh latency at 32³ and 64³ (latent draw, decoder, marching cubes, cleanup);
- the training minutes recorded in the model's metadata.
Goals from issue 4: IoU ≥ 0.85 at 32³, 100 % watertight, ≤ 30 ms / ≤ 150 ms, ≤ 15 min.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.shape.dataset import build_procedural  # noqa: E402
from engine.shape.evaluation import evaluate_model  # noqa: E402
from engine.shape.generation import ShapeModel, load  # noqa: E402
from engine.shape.meshing import Mesh, grid_to_mesh  # noqa: E402
from engine.shape.model import ShapeVAE, ShapeVAEConfig  # noqa: E402
from engine.store.checkpoints import load_file  # noqa: E402

UNSEEN_SEED_OFFSET = 1_000_003  # the same unseen seeds as the shape.eval op


class PCABaseline:
    """Linear autoencoder on flattened occupancy: mean + top-k principal directions.
    Sampling draws scores from N(0, diag(variance of the training scores))."""

    def __init__(self, grids: np.ndarray, k: int):
        x = torch.from_numpy(grids.reshape(len(grids), -1).astype(np.float32))
        self.shape = grids.shape[1:]
        self.mean = x.mean(0)
        _, s, v = torch.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = v[:k]                                    # k × D
        self.std = (s[:k] / np.sqrt(max(len(grids) - 1, 1))).numpy()

    def encode_grids(self, grids: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(grids.reshape(len(grids), -1).astype(np.float32))
        return ((x - self.mean) @ self.basis.T).numpy()

    def decode_grids(self, latents: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(latents, np.float32)) @ self.basis + self.mean
        return x.clamp(0, 1).numpy().reshape((-1,) + self.shape)

    def reconstruct_grids(self, grids: np.ndarray) -> np.ndarray:
        return self.decode_grids(self.encode_grids(grids))

    def sample_latents(self, seed: int, count: int = 1, temperature: float = 1.0) -> np.ndarray:
        return np.stack([np.random.default_rng([seed, i]).standard_normal(len(self.std)) * self.std
                         for i in range(count)]).astype(np.float32) * temperature


def latency_ms(make_mesh, repeats: int) -> float:
    """Median wall-clock milliseconds of one call (what a user waits)."""
    make_mesh(0)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        make_mesh(i + 1)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def cpu_ms(make_mesh, repeats: int) -> float:
    """Mean CPU milliseconds of this process per call: on a shared, busy machine the wall clock
    also counts time spent waiting for a core; this does not."""
    make_mesh(0)
    start = time.process_time()
    for i in range(repeats):
        make_mesh(i + 1)
    return 1000 * (time.process_time() - start) / repeats


def latency_64(model: ShapeModel, repeats: int, clock=latency_ms) -> float:
    """Sample → mesh at 64³: a 64³ decoder of the same width and latent (its weights do not change
    its cost), meshing a realistic 64³ grid (the 32³ model's decoded shapes, upsampled)."""
    c = model.config
    big = ShapeModel(ShapeVAE(ShapeVAEConfig(resolution=64, width=c.width, latent_dim=c.latent_dim)))
    real = torch.from_numpy(model.decode_grids(model.sample_latents(0, repeats + 1)))[:, None]
    real = torch.nn.functional.interpolate(real, scale_factor=2, mode="trilinear").numpy()[:, 0]

    def make(i: int):
        big.decode_grids(big.sample_latents(i, 1))
        return grid_to_mesh(real[i])

    return clock(make, repeats)


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        name = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {len(__import__('os').sched_getaffinity(0))} cores (the VAE runs on one torch thread, as in the ops)"


# -- the real-mesh collection (issue 20) ------------------------------------------------------
COLLECTION = ROOT / "bench" / "data" / "meshes"
DOCS = ROOT / "docs" / "shapes"


def _train(name: str, folder: Path, models: Path, minutes: float | None, *extra: str) -> None:
    """The plain default command a user types, plus `extra` (the grid VAE's one setting)."""
    if (models / f"{name}.safetensors").exists():
        return
    command = [sys.executable, "-m", "engine", "train", "shape", "--meshes", str(folder), "--up", "y",
               "--name", name, "--models-dir", str(models), "--device", "cpu", *extra]
    if minutes is not None:
        command += ["--minutes", str(minutes)]
    print("training:", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def _surface(mesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface points and their face normals."""
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    points, face = trimesh.sample.sample_surface(tm, count, seed=seed)
    return np.asarray(points), np.asarray(tm.face_normals[face])


def _compare(out, ref, ref_grid64: np.ndarray, points: int = 4096) -> dict[str, float]:
    """IoU at 64³ (both voxelised by the same code), Chamfer-L1, normal consistency, F-score@1 %."""
    from scipy.spatial import cKDTree

    from engine.shape.evaluation import voxel_iou
    from engine.shape.voxels import voxelise

    if out.empty:
        return {"iou64": 0.0, "chamfer_l1": 1.0, "normal_consistency": 0.0, "fscore_1pct": 0.0}
    pa, na = _surface(out, points)
    pb, nb = _surface(ref, points)
    da, ia = cKDTree(pb).query(pa)
    db, ib = cKDTree(pa).query(pb)
    precision, recall = (da < 0.01).mean(), (db < 0.01).mean()
    return {"iou64": float(voxel_iou(voxelise(out.vertices, out.faces, 64), ref_grid64)),
            "chamfer_l1": 0.5 * float(da.mean() + db.mean()),
            "normal_consistency": 0.5 * float(np.abs((na * nb[ia]).sum(1)).mean() + np.abs((nb * na[ib]).sum(1)).mean()),
            "fscore_1pct": float(2 * precision * recall / max(precision + recall, 1e-12))}


def _upsampled(grids: np.ndarray, res: int) -> np.ndarray:
    x = torch.from_numpy(np.asarray(grids, np.float32))[:, None]
    return torch.nn.functional.interpolate(x, size=(res,) * 3, mode="trilinear", align_corners=False)[:, 0].numpy()


def collection(minutes: float | None, work: Path, samples: int, repeats: int, other: str = "grid32") -> int:
    import json
    import os

    from engine.shape.evaluation import is_clean
    from engine.shape.meshes import load_mesh_file, normalise
    from engine.shape.render import render_grids, sheet
    from engine.shape.voxels import voxelise
    from engine.train.plots import save_png

    split = json.loads((COLLECTION / "split.json").read_text())
    budget = "default (the kind's TRAIN_DEFAULTS)" if minutes is None else f"{minutes} min"
    train_dir = work / "train"  # one folder for every budget: its voxel and point cache is reused
    models = work / ("default" if minutes is None else f"{minutes}min") / "models"
    train_dir.mkdir(parents=True, exist_ok=True)
    for name in split["train"]:
        if not (train_dir / name).exists():
            os.symlink(COLLECTION / name, train_dir / name)
    started = time.perf_counter()
    _train("ours", train_dir, models, minutes)
    _train(other, train_dir, models, minutes,
           *(("--set", "decoder=implicit") if other == "implicit" else
             ("--set", "resolution=32", "--set", "latent=vector", "--set", "latent_dim=64")))
    print(f"trained (or reused) both models in {(time.perf_counter() - started) / 60:.1f} min; budget: {budget}")

    loaded = {}
    for name in ("ours", other):
        metadata, weights = load_file(models / f"{name}.safetensors")
        loaded["grid32" if name == other else name] = (metadata, load(metadata["config"], weights, "cpu"))
    ours = loaded["ours"][1]
    train_grids = np.stack([voxelise(*_arrays(normalise(load_mesh_file(COLLECTION / n), "y")), 32)
                            for n in split["train"]])
    pca = PCABaseline(train_grids, 64)

    held = [(n, normalise(load_mesh_file(COLLECTION / n), "y")) for n in split["held_out"]]
    rows = {k: [] for k in ("ours", "grid32", "pca")}
    renders = {k: [] for k in ("input", "ours", "grid32", "pca")}
    for i, (name, mesh) in enumerate(held):
        v, f = _arrays(mesh)
        ref = Mesh(v.astype(np.float32), f.astype(np.int32))
        ref64 = voxelise(v, f, 64)
        grid32 = voxelise(v, f, 32)
        if not grid32.any():
            print(f"skipped {name}: no inside at 32³")
            continue
        volumes = {"ours": ours.decode_grids(ours.encode(v, f), resolution=128)[0],
                   "grid32": loaded["grid32"][1].decode_grids(loaded["grid32"][1].encode(v, f), resolution=128)[0],
                   "pca": _upsampled(pca.reconstruct_grids(grid32[None]), 128)[0]}
        for key, volume in volumes.items():
            rows[key].append(_compare(grid_to_mesh(volume), ref, ref64))
        if len(renders["input"]) < 8:
            renders["input"].append(voxelise(v, f, 128).astype(np.float32))
            for key, volume in volumes.items():
                renders[key].append(volume)

    # Samples: watertight and one piece as decoded (every part) and as delivered (largest part).
    sampled = [ours.decode_grids(ours.sample_latents(i, 1), resolution=128)[0] for i in range(samples)]
    raw = [grid_to_mesh(g, keep="all") for g in sampled]
    import trimesh

    one_piece = np.mean([not m.empty and trimesh.Trimesh(m.vertices, m.faces, process=False).body_count == 1
                         for m in raw])
    clean_raw = np.mean([is_clean(m) for m in raw])
    clean_delivered = np.mean([is_clean(grid_to_mesh(g)) for g in sampled])

    v, f = _arrays(held[0][1])
    times = {}
    for res in (64, 128, 256):
        times[f"sample→mesh {res}³"] = {k: latency_ms(lambda i, m=m, r=res: m.sample(i, 1, resolution=r), repeats)
                                        for k, m in (("ours", ours), ("grid32", loaded["grid32"][1]))}
        times[f"encode→mesh {res}³"] = {k: latency_ms(lambda i, m=m, r=res: m.decode(m.encode(v, f), r), repeats)
                                        for k, m in (("ours", ours), ("grid32", loaded["grid32"][1]))}

    DOCS.mkdir(parents=True, exist_ok=True)
    size = 128
    save_png(sheet([render_grids(np.stack(renders[k]), size=size) for k in ("input", "ours", "grid32", "pca")]),
             DOCS / "reconstructions.png")
    save_png(sheet([render_grids(np.stack(sampled[:8]), size=size)]), DOCS / "samples.png")
    a, b = ours.encode(*_arrays(held[1][1])), ours.encode(*_arrays(held[2][1]))
    path = np.stack([ours.blend(a, b, t) for t in np.linspace(0, 1, 9)])
    save_png(sheet([render_grids(ours.decode_grids(path, resolution=128), size=size)]), DOCS / "interpolation.png")

    print(f"machine: {machine()}")
    print(f"held-out: {len(held)} meshes of bench/data/meshes (split.json); train: {len(split['train'])}; "
          f"budget: {budget}")
    for key in ("ours", "grid32"):
        md = loaded[key][0]
        print(f"{key if key == 'ours' else other}: {md['config'].get('decoder', 'grid')} decoder at "
              f"{md['config']['resolution']}³, trained "
              f"{md.get('train_seconds', 0) / 60:.1f} min ({md.get('step')} steps), "
              f"held-out share at train time {md['data'].get('held_out_shapes')}/"
              f"{md['data'].get('held_out_shapes', 0) + md['data'].get('train_shapes', 0)}")
    print(f"\n{'metric':<22}{'ours':>10}{other:>10}{'PCA-64':>10}{'ours/2nd':>10}{'ours/PCA':>10}")
    mean = {k: {m: float(np.mean([r[m] for r in rs])) for m in rs[0]} for k, rs in rows.items()}
    for m in mean["ours"]:
        o, g, p = mean["ours"][m], mean["grid32"][m], mean["pca"][m]
        print(f"{m:<22}{o:10.4f}{g:10.4f}{p:10.4f}{o / max(g, 1e-12):10.2f}{o / max(p, 1e-12):10.2f}")
    print(f"\n{'ms (median)':<22}{'ours':>10}{other:>10}{'ratio':>10}")
    for label, t in times.items():
        print(f"{label:<22}{t['ours']:10.1f}{t['grid32']:10.1f}{t['ours'] / t['grid32']:10.2f}")
    print(f"\nsamples ({samples}): one piece as decoded {one_piece:.0%}; watertight, wound, one piece as decoded "
          f"{clean_raw:.0%}, as delivered {clean_delivered:.0%}")
    train_minutes = loaded["ours"][0].get("train_seconds", 0) / 60
    goals = [("IoU ≥ 0.80", mean["ours"]["iou64"] >= 0.80),
             ("IoU ≥ PCA + 0.10", mean["ours"]["iou64"] >= mean["pca"]["iou64"] + 0.10),
             ("Chamfer-L1 ≤ 0.6 × grid 32³", mean["ours"]["chamfer_l1"] <= 0.6 * mean["grid32"]["chamfer_l1"]),
             ("≥ 90 % of samples one piece", one_piece >= 0.9),
             ("100 % watertight delivered", clean_delivered == 1.0),
             ("sample→mesh 128³ ≤ 300 ms", times["sample→mesh 128³"]["ours"] <= 300),
             ("sample→mesh 64³ ≤ 60 ms", times["sample→mesh 64³"]["ours"] <= 60),
             ("≤ 15 training minutes", train_minutes <= 15.5)]
    print("goals: " + "; ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in goals))
    print(f"renders: {', '.join(str(p.relative_to(ROOT)) for p in sorted(DOCS.glob('*.png')))}")
    return 0


def ceilings(model_path: Path | None, count: int, perfect: bool = True) -> int:
    """Where the IoU goes, on the collection's held-out meshes (IoU at 64³, as `collection` measures it).

    Ceilings: each mesh voxelised at 32³, 64³ and 128³ and meshed back through our own path (trilinear
    upsampling to 128³ as a grid decoder's output is, marching cubes, largest part): what a perfect decoder
    of that label resolution would score. With `model_path` (a model trained on the collection's train split),
    its IoU on `count` meshes it was fitted to (every 10th in name order is the trainer's own held-out share,
    left out) beside the held-out meshes: under- or over-fitting."""
    import json

    from engine.shape.evaluation import voxel_iou
    from engine.shape.meshes import load_mesh_file, normalise
    from engine.shape.voxels import voxelise

    split = json.loads((COLLECTION / "split.json").read_text())
    fitted = [n for i, n in enumerate(sorted(split["train"])) if i % 10 != 9]
    fitted = sorted(np.random.default_rng(0).choice(fitted, size=min(count, len(fitted)), replace=False))
    model = None
    if model_path is not None:
        metadata, weights = load_file(model_path)
        model = load(metadata["config"], weights, "cpu")
        print(f"model: {model_path.name}, {metadata['config'].get('decoder', 'grid')} decoder, "
              f"{metadata.get('train_seconds', 0) / 60:.1f} min ({metadata.get('step')} steps)")

    def iou(volume: np.ndarray, ref64: np.ndarray) -> float:
        out = grid_to_mesh(volume)
        return 0.0 if out.empty else float(voxel_iou(voxelise(out.vertices, out.faces, 64), ref64))

    rows: dict[str, list[float]] = {}
    for split_name, names in (("held-out", split["held_out"]), ("train", fitted)):
        for name in names:
            v, f = _arrays(normalise(load_mesh_file(COLLECTION / name), "y"))
            ref64 = voxelise(v, f, 64)
            if not voxelise(v, f, 32).any():
                continue  # no inside at 32³ (the bench skips these too)
            for res in ((32, 64, 128) if split_name == "held-out" else (32,)) if perfect else ():
                grid = voxelise(v, f, res).astype(np.float32)
                volume = grid if res == 128 else _upsampled(grid[None], 128)[0]
                rows.setdefault(f"perfect {res}³ grid, {split_name}", []).append(iou(volume, ref64))
            if model is not None:
                volume = model.decode_grids(model.encode(v, f), resolution=128)[0]
                rows.setdefault(f"model, {split_name}", []).append(iou(volume, ref64))
    print(f"\n{'IoU at 64³ (mean)':<34}{'IoU':>8}{'meshes':>8}")
    for label, values in rows.items():
        print(f"{label:<34}{np.mean(values):8.3f}{len(values):8d}")
    return 0


def pieces(model_path: Path, work: Path, count: int, temperatures: list[float]) -> int:
    """Raw samples of a model trained on the collection's train split: the share in one piece (seeds
    0..count-1 meshed at 128³, every part, trimesh's body count, as `collection` counts them) and their
    quality: IoU at the model's resolution with the nearest training grid, how many distinct training
    shapes are nearest, each held-out mesh's IoU with its nearest sample, the mean IoU between samples
    (lower: more varied). Rows: the model as stored, and with its codes narrowed to the whole ones
    (ShapeModel.keep_whole_codes; what training now does when it ends)."""
    import json
    import os

    import trimesh

    from engine.shape.dataset import build_from_folder
    from engine.shape.evaluation import is_clean

    metadata, weights = load_file(model_path)
    split = json.loads((COLLECTION / "split.json").read_text())
    folders = {}
    for part in ("train", "held_out"):
        folders[part] = work / part  # work/train: the folder collection() trains from
        folders[part].mkdir(parents=True, exist_ok=True)
        for name in split[part]:
            if not (folders[part] / name).exists():
                os.symlink(COLLECTION / name, folders[part] / name)
    res = metadata["config"]["resolution"]
    train = build_from_folder(folders["train"], res, up="y").grids.reshape(len(split["train"]), -1).astype(np.float32)
    held = build_from_folder(folders["held_out"], res, up="y").grids
    held = held.reshape(len(held), -1).astype(np.float32)

    def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        inter = a @ b.T
        return inter / np.maximum(a.sum(1)[:, None] + b.sum(1)[None] - inter, 1)

    print(f"machine: {machine()}\nmodel: {model_path} ({res}³, step {metadata.get('step')}); {count} seeds at 128³")
    print(f"{'codes, temperature':<24}{'kept':>6}{'one piece':>11}{'delivered':>11}{'near-train':>12}"
          f"{'distinct':>10}{'held→sample':>13}{'between':>9}")
    for whole in (False, True):
        model = load(metadata["config"], weights, "cpu")
        label = "as stored"
        if whole:
            share = model.keep_whole_codes()
            label = f"whole ({share:.0%})"
        for t in temperatures:
            latents = np.concatenate([model.sample_latents(i, 1, t) for i in range(count)])
            grids = [model.decode_grids(z, resolution=128)[0] for z in latents]
            raw = [grid_to_mesh(g, keep="all") for g in grids]
            one = np.mean([not m.empty and trimesh.Trimesh(m.vertices, m.faces, process=False).body_count == 1
                           for m in raw])
            delivered = np.mean([is_clean(grid_to_mesh(g)) for g in grids])
            own = (model.decode_grids(latents) > 0.5).reshape(count, -1).astype(np.float32)
            near, pair = iou(own, train), iou(own, own)
            print(f"{label + f', {t:g}':<24}{len(model.vae.codes_mean):6d}{one:11.0%}{delivered:11.0%}"
                  f"{near.max(1).mean():12.3f}{len(set(near.argmax(1).tolist())):6d}/{count:<3d}"
                  f"{iou(held, own).max(1).mean():13.3f}{(pair.sum() - count) / (count * (count - 1)):9.3f}", flush=True)
    return 0


def _arrays(mesh) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "engine" / "weights" / "shape-default.safetensors")
    parser.add_argument("--held-out", type=int, default=100, help="unseen procedural shapes to measure on")
    parser.add_argument("--samples", type=int, default=32, help="samples for watertightness and coverage")
    parser.add_argument("--repeats", type=int, default=20, help="timed sample → mesh calls per figure")
    parser.add_argument("--collection", action="store_true", help="measure on the real-mesh collection instead")
    parser.add_argument("--minutes", type=float, help="--collection: training budget per model (default: the kind's)")
    parser.add_argument("--implicit", action="store_true",
                        help="--collection: compare with the implicit decoder instead of the 32³ grid VAE")
    parser.add_argument("--work", type=Path, default=Path("/tmp/atelier-shape-bench"),
                        help="--collection: folder for the trained models (reused when present)")
    parser.add_argument("--ceilings", action="store_true",
                        help="the collection's IoU ceilings per label resolution; with --model, train vs held-out")
    parser.add_argument("--model", type=Path, help="--ceilings: a model trained on the collection's train split")
    parser.add_argument("--fitted", type=int, default=47, help="--ceilings: training meshes to measure the model on")
    parser.add_argument("--model-only", action="store_true", help="--ceilings: only the model's rows (A/B runs)")
    parser.add_argument("--pieces", action="store_true", help="raw samples of --model (trained on the collection): "
                        "one piece, and how varied; --samples seeds")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5], help="--pieces: temperatures")
    args = parser.parse_args(argv)
    if args.pieces:
        return pieces(args.model, args.work, args.samples, args.temperatures)
    if args.ceilings:
        return ceilings(args.model, args.fitted, perfect=not args.model_only)
    if args.collection:
        return collection(args.minutes, args.work, args.samples, max(3, args.repeats // 4),
                          "implicit" if args.implicit else "grid32")

    metadata, weights = load_file(args.weights)
    model = load(metadata["config"], weights, "cpu")
    c = model.config
    source = metadata["data"]["source"]
    if "procedural" not in source:
        raise SystemExit(f"{args.weights} was trained on meshes, not the procedural set; this bench needs the latter")
    train_set, _ = build_procedural(source["procedural"], source.get("seed", 0), c.resolution).split(0.1)
    held = build_procedural(args.held_out, source.get("seed", 0) + UNSEEN_SEED_OFFSET, c.resolution).grids
    started = time.perf_counter()
    pca = PCABaseline(train_set.grids, c.latent_dim)
    pca_fit_s = time.perf_counter() - started

    rows = {}
    for name, m in (("vae", model), ("pca", pca)):
        metrics = evaluate_model(m, held, samples=args.samples, mesh_shapes=min(32, len(held)))
        metrics["latency32_ms"] = latency_ms(lambda i: grid_to_mesh(m.decode_grids(m.sample_latents(i, 1))[0]),
                                             args.repeats)
        rows[name] = metrics
    # model.sample is what the shape.sample op runs: latent, decoder, marching cubes, largest part.
    sample = lambda i: model.sample(i, 1)  # noqa: E731
    rows["vae"]["latency32_op_ms"] = latency_ms(sample, args.repeats)
    rows["vae"]["cpu32_op_ms"] = cpu_ms(sample, args.repeats)
    rows["vae"]["latency64_ms"] = latency_64(model, args.repeats)
    rows["vae"]["cpu64_ms"] = latency_64(model, args.repeats, cpu_ms)

    print(f"machine: {machine()}")
    print(f"model: {args.weights.name}  {c.resolution}³ width {c.width} latent {c.latent_dim}, "
          f"trained {metadata.get('train_seconds', 0) / 60:.1f} min ({metadata.get('step')} steps) on "
          f"{metadata['data'].get('train_shapes')} procedural shapes; PCA fitted in {pca_fit_s:.1f} s")
    print(f"held-out: {len(held)} unseen procedural shapes; {args.samples} samples\n")
    print(f"{'metric':<24}{'VAE':>10}{'PCA':>10}{'VAE/PCA':>10}   better")
    better = {"iou": "higher", "chamfer_l1": "lower", "fscore_1pct": "higher", "clean_share": "higher",
              "delivered_clean_share": "higher", "coverage": "higher", "mmd": "lower", "latency32_ms": "lower"}
    for key, direction in better.items():
        v, p = rows["vae"][key], rows["pca"][key]
        ratio = f"{v / p:10.2f}" if p else f"{'-':>10}"
        print(f"{key:<24}{v:10.4g}{p:10.4g}{ratio}   {direction}")
    for key in ("latency32_op_ms", "cpu32_op_ms", "latency64_ms", "cpu64_ms"):
        print(f"{key:<24}{rows['vae'][key]:10.4g}")
    print(f"{'train_minutes':<24}{metadata.get('train_seconds', 0) / 60:10.4g}")
    goals = [("IoU ≥ 0.85", rows["vae"]["iou"] >= 0.85),
             ("100 % watertight (delivered)", rows["vae"]["delivered_clean_share"] == 1.0),
             ("≤ 30 ms at 32³", rows["vae"]["latency32_op_ms"] <= 30),
             ("≤ 150 ms at 64³", rows["vae"]["latency64_ms"] <= 150),
             ("≤ 15 training minutes", metadata.get("train_seconds", 1e9) / 60 <= 15)]
    print("\ngoals: " + "; ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in goals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
