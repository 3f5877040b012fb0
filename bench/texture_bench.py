"""Texture GAN against a non-learned baseline (image quilting), on the same exemplar, in one run.

    python bench/texture_bench.py                       # the shipped texture-default model
    python bench/texture_bench.py --model NAME --models-dir DIR --sizes 512,1024 --device cuda

Prints, side by side: seconds per image at each size for our generator and for image quilting
(Efros & Freeman 2001, written here in numpy: the patch-copying kind of synthesis Embark's
texture-synthesis does), the speed-up, our generator once more with the plain (unfolded)
nearest upsampling it used before (the same pictures, slower), every quality metric of
engine.texture.evaluation as a ratio to real-vs-real (1 = as close to the exemplar as another
piece of it) for the model as the engine runs it, for its raw generator (without the
calibration of engine/texture/calibration.py) and for quilting, the seam ratio across the
wrap-around border (1 = seamless), how far single pictures are from the photo (`gram/picture`),
our tiling error, and the training minutes the model used. The machine is shared and noisy: compare ratios, not seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the baseline -------------------------------------------------------------------------------

class Quilter:
    """Image quilting: lay blocks in raster order; each block is picked at random among the
    exemplar blocks whose overlap with what is already laid is within (1 + tol) of the best,
    then joined along the minimum-error boundary cut."""

    def __init__(self, exemplar: np.ndarray, block: int = 64, overlap: int = 12, stride: int = 3,
                 tol: float = 0.1):
        self.ex = exemplar.astype(np.float32)  # HxWxC in [0, 1]
        self.block, self.overlap, self.tol = block, overlap, tol
        h, w, _ = self.ex.shape
        ys, xs = np.meshgrid(np.arange(0, h - block + 1, stride), np.arange(0, w - block + 1, stride), indexing="ij")
        self.pos = np.stack([ys.ravel(), xs.ravel()], 1)
        windows = np.lib.stride_tricks.sliding_window_view(self.ex, (block, block), axis=(0, 1))  # h',w',C,B,B
        cand = windows[self.pos[:, 0], self.pos[:, 1]]  # N, C, B, B
        self.left = np.ascontiguousarray(cand[:, :, :, :overlap]).reshape(len(cand), -1)
        self.top = np.ascontiguousarray(cand[:, :, :overlap, :]).reshape(len(cand), -1)
        self.left_sq, self.top_sq = (self.left ** 2).sum(1), (self.top ** 2).sum(1)

    def _patch(self, i: int) -> np.ndarray:
        y, x = self.pos[i]
        return self.ex[y:y + self.block, x:x + self.block]

    @staticmethod
    def _cut(err: np.ndarray) -> np.ndarray:
        """Minimum-error path down an (rows x overlap) error strip; True right of the path."""
        rows, cols = err.shape
        cost = err.copy()
        for r in range(1, rows):  # in-place slices: np.r_ here cost ~35% of the whole synthesis
            prev = cost[r - 1]
            best = prev.copy()
            np.minimum(best[1:], prev[:-1], out=best[1:])
            np.minimum(best[:-1], prev[1:], out=best[:-1])
            cost[r] += best
        path = np.empty(rows, int)
        path[-1] = int(cost[-1].argmin())
        for r in range(rows - 2, -1, -1):
            c = path[r + 1]
            lo, hi = max(c - 1, 0), min(c + 2, cols)
            path[r] = lo + int(cost[r, lo:hi].argmin())
        return np.arange(cols)[None, :] >= path[:, None]

    def synthesize(self, height: int, width: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        b, o = self.block, self.overlap
        step = b - o
        ny, nx = math.ceil(max(height - o, 1) / step), math.ceil(max(width - o, 1) / step)
        canvas = np.zeros((ny * step + o, nx * step + o, self.ex.shape[2]), np.float32)
        for i in range(ny):
            for j in range(nx):
                y, x = i * step, j * step
                err = np.zeros(len(self.pos), np.float32)
                if j:
                    t = canvas[y:y + b, x:x + o].transpose(2, 0, 1).ravel()
                    err += self.left_sq - 2 * (self.left @ t) + (t ** 2).sum()
                if i:
                    t = canvas[y:y + o, x:x + b].transpose(2, 0, 1).ravel()
                    err += self.top_sq - 2 * (self.top @ t) + (t ** 2).sum()
                if i or j:
                    good = np.flatnonzero(err <= err.min() * (1 + self.tol) + 1e-6)
                    patch = self._patch(int(rng.choice(good)))
                else:
                    patch = self._patch(int(rng.integers(len(self.pos))))
                keep_new = np.ones((b, b), bool)
                old = canvas[y:y + b, x:x + b]
                if j:
                    keep_new[:, :o] &= self._cut(((patch[:, :o] - old[:, :o]) ** 2).sum(-1))
                if i:
                    keep_new[:o, :] &= self._cut(((patch[:o, :] - old[:o, :]) ** 2).sum(-1).T).T
                canvas[y:y + b, x:x + b] = np.where(keep_new[..., None], patch, old)
        return canvas[:height, :width]


# --- measuring ----------------------------------------------------------------------------------

def machine() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name"))
    except Exception:
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores visible"


@contextlib.contextmanager
def plain_upsampling():
    """Our generator as it ran before the folded upsampling: nearest resize, then the 3x3 conv at
    the full resolution (the same function, so the same picture; only the time differs)."""
    import torch.nn.functional as F

    from engine.texture import model as texture_gan

    folded = texture_gan.nearest_up_conv
    texture_gan.nearest_up_conv = lambda x, w, b: F.conv2d(
        F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="circular"), w, b)
    try:
        yield
    finally:
        texture_gan.nearest_up_conv = folded


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gram_per_picture(samples: np.ndarray, images: list[np.ndarray], seed: int, swap: bool) -> float:
    """The median Gram distance of single samples to the reference half, over that of single
    crops of the other half: how far one picture is from the photo, where the metrics of
    texture_eval compare the pooled statistics of all samples (an artist uses one at a time)."""
    from engine.texture.evaluation import RandomFeatures, _tensor, grams, real_sets

    fake = _tensor(samples)
    real_a, real_b = real_sets(images, fake.shape[-1], max(len(fake), 8), seed, swap)
    net = RandomFeatures(fake.shape[1])
    reference = [g.mean(0) for g in grams(real_a, net)]

    def median_distance(x):  # texture_eval.gram_distance, one picture at a time
        return float(sum((g - r).flatten(1).norm(dim=1) / r.norm() for g, r in zip(grams(x, net), reference)).median())

    return median_distance(fake) / median_distance(real_b[:len(fake)])


def load_model(name: str, models_dir: Path | None, device: str):
    from engine.store.checkpoints import ModelStore
    from engine.texture.generation import load

    store = ModelStore(models_dir or Path("/nonexistent-atelier-models"))
    metadata, weights = store.load(name)
    return metadata, load(metadata["config"], weights, device)


def exemplar_source(metadata: dict, given: str | None) -> str:
    if given:
        return given
    used = [e["path"] for e in metadata.get("data", {}).get("images", [])]
    if used and used[0].startswith("skimage:"):
        return used[0].split(":", 1)[1]
    if used:
        return used[0]
    raise SystemExit("the model does not say what it was trained on; give --images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="texture-default")
    parser.add_argument("--models-dir", type=Path, help="where --model lives (default: the shipped models)")
    parser.add_argument("--images", help="exemplar (default: what the model was trained on)")
    parser.add_argument("--sizes", default="512,1024,2048", help="output sides to time")
    parser.add_argument("--eval-size", type=int, default=256, help="side of the samples the metrics compare")
    parser.add_argument("--samples", type=int, default=48, help="samples per method and draw for the quality metrics")
    parser.add_argument("--draws", type=int, default=4, help="independent sample sets per method for the quality metrics")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats for each method (best is kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from scipy.stats import sem

    from engine.device import interactive_threads

    blas_threads = str(interactive_threads())
    if argv is None and os.environ.get("OPENBLAS_NUM_THREADS") != blas_threads:
        # Quilting's matrix products run on numpy's BLAS, which takes its thread count from the
        # environment when numpy is imported: restart with it equal to what our generator gets,
        # so that neither method has more of the machine (on a quiet machine BLAS took both
        # cores and quilting ran twice as fast as beside a busy core).
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OPENBLAS_NUM_THREADS": blas_threads})

    import torch

    torch.set_num_threads(args.threads)
    from engine.texture.evaluation import seam_ratio, texture_metrics, tile_error
    from engine.texture.generation import TextureModel, to_uint8
    from engine.texture.images import ImageCrops
    from engine.texture.objective import resolve_images

    metadata, model = load_model(args.model, args.models_dir, args.device)
    source = exemplar_source(metadata, args.images)
    images, _ = resolve_images(source, model.channels, min_size=2 * args.eval_size)
    exemplar01 = (images[0] + 1) / 2
    quilter = Quilter(exemplar01)
    sizes = [int(s) for s in args.sizes.split(",")]
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    print(f"machine: {machine()}; torch {torch.__version__} on {args.device}; generation on "
          f"{interactive_threads()} thread(s), as the engine runs it (half the cores); quilting's BLAS on "
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"model {args.model}: {metadata.get('step')} steps, {metadata.get('train_seconds', 0) / 60:.1f} training "
          f"minutes, stride {model.stride}; exemplar {source}; baseline: image quilting, block 64, overlap 12, "
          "candidates on a stride-3 grid")

    print(f"\n{'size':>6} {'ours s':>9} {'quilting s':>11} {'speed-up':>9} {'ours, plain upsampling s':>25}")
    for size in sizes:
        model.generate(size, size, seed=0)  # warm-up (allocations, cuDNN plans)
        sync()
        ours = best_of(lambda: (model.generate(size, size, seed=1), sync()), args.repeats)
        theirs = best_of(lambda: quilter.synthesize(size, size, seed=1), args.repeats)  # best of as many
        with plain_upsampling():
            model.generate(size, size, seed=0)
            sync()
            plain = best_of(lambda: (model.generate(size, size, seed=1), sync()), args.repeats)
        print(f"{size:>6} {ours:>9.3f} {theirs:>11.2f} {theirs / ours:>8.0f}x {plain:>25.3f}", flush=True)

    n, s = args.samples, args.eval_size
    uncalibrated = dict.fromkeys(("image_moments", "spectrum_gain", "field_gain", "tone_curve"))
    raw = TextureModel(dataclasses.replace(model.config, **uncalibrated), model.G, args.device)
    as_uint8 = lambda x: np.round(x * 255).astype(np.uint8)

    def draw(k: int) -> dict[str, np.ndarray]:
        seeds = range(100 + 1000 * k, 100 + 1000 * k + n)
        crops = ImageCrops(images, s, flips=False, rot90=False, fair_edges=True, seed=100 + k).batch(np.arange(n))
        return {
            "ours": np.stack([model.generate(s, s, seed=i) for i in seeds]),
            "ours raw": np.stack([raw.generate(s, s, seed=i) for i in seeds]),
            "quilting": np.stack([as_uint8(quilter.synthesize(s, s, seed=i)) for i in seeds]),
            # the texture itself, every part of the photo counted alike (as the calibration counts
            # it): what a perfect model would score, i.e. how finely the metrics can tell
            "exemplar crops": to_uint8(crops),
        }

    # Each draw: fresh samples of every method, measured against either half of the exemplar as the
    # reference (halves of a photo differ), with that draw's reference crops and projections.
    scores: dict[str, list[dict[str, float]]] = {}
    for k in range(args.draws):
        for name, samples in draw(k).items():
            scores.setdefault(name, []).extend(
                {**texture_metrics(samples, images, seed=k, swap=swap),
                 "gram/picture": gram_per_picture(samples, images, k, swap)} for swap in (False, True))
    print(f"\nquality at {s}x{s}: {args.draws} draws of {n} samples per method, each against both halves; "
          "ratios to real-vs-real (ideal 1; diversity and nearest_patch << 1 mean collapse or copying), "
          "mean ± standard error over the draws")
    print(f"{'metric':>14}" + "".join(f"{name:>16}" for name in scores) + f"{'ours - quilting':>18}")
    for key in scores["ours"][0]:
        per_draw = {name: np.array([m[key] for m in runs]).reshape(args.draws, 2).mean(1) for name, runs in scores.items()}
        cells = [f"{v.mean():.2f} ± {sem(v):.2f}" for v in per_draw.values()]
        gap = per_draw["ours"] - per_draw["quilting"]  # paired: same references and projections
        print(f"{key:>14}" + "".join(f"{c:>16}" for c in cells) + f"{gap.mean():>+11.3f} ± {sem(gap):.3f}")
    big = sizes[-1]
    seams = [seam_ratio(model.generate(big, big, seed=3)[None]), seam_ratio(raw.generate(big, big, seed=3)[None]),
             seam_ratio(as_uint8(quilter.synthesize(big, big, seed=3))[None])]
    print(f"{'seam ' + str(big):>14}" + "".join(f"{x:>16.2f}" for x in seams))
    print(f"{'tile_error':>14}{max(tile_error(model.G, s), tile_error(model.G, 2 * s, 1)):>16.1e}{'':>16}{'n/a':>16}"
          "  (max |tile(G(z)) - G(tile(z))|; quilting cannot tile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
