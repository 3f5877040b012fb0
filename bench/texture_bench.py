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
wrap-around border (1 = seamless), how far single pictures are from the photo (`gram/picture`), the
lattice measure (gradient energy on 4/8/16-px lines over elsewhere, ideal 1.00 ± 0.05),
our tiling error, and the training minutes the model used. The machine is shared and noisy: compare ratios, not seconds.

    python bench/texture_bench.py --suite [--maps] [--minutes 2] [--only bricks,sand] [--models-dir DIR --reuse]

trains every exemplar of the development suite (bench/data/textures, issue 19) with the plain
default command, `atelier train texture --images <colour map> --name N` (--minutes shortens the
runs while developing, and the output says so), and prints per exemplar and as the suite median
and worst: gram, swd, spectrum and elements (the shapes of connected components) as ratios to
real-vs-real at 256², the same four at a coarse scale (1024² outputs and the exemplar both
downsampled 4x, so structure larger than the discriminator's view counts), the lattice measure,
seam ratio, tiling error, steps reached and training minutes, for our model, for image quilting
and for the exemplar's own crops (the floor), then the issue's goals as PASS/FAIL. One contact
sheet per exemplar (exemplar | ours | quilting | ours tiled 2x2, 1:1) goes to docs/textures/.
With --maps each full PBR set is trained as a user with the set would train it (its folder, one
generator on the stacked maps) and each map (normal, roughness, height, AO) gets the fine-scale
ratios too, beside quilting of the stacked maps, plus how far the normals are from unit length.
Each exemplar's figures are stored beside its model (suite-NAME.bench.json): run halves of the
suite on two cores with --only, then once more over all with --reuse for the whole report.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the baseline -------------------------------------------------------------------------------

class Quilter:
    """Image quilting: lay blocks in raster order; each block is picked at random among the
    exemplar blocks whose overlap with what is already laid is within (1 + tol) of the best,
    then joined along the minimum-error boundary cut."""

    def __init__(self, exemplar: np.ndarray, block: int = 64, overlap: int = 12, stride: int = 3,
                 tol: float = 0.1, max_candidates: int = 20_000):
        self.ex = exemplar.astype(np.float32)  # HxWxC in [0, 1]
        h, w, _ = self.ex.shape
        block = min(block, h, w)  # an exemplar smaller than a block: blocks as large as it allows
        overlap = min(overlap, block // 4)
        self.block, self.overlap, self.tol = block, overlap, tol
        # a 1024 px exemplar has 100,000 block positions on a stride-3 grid: thin the grid so a
        # block's search stays ~20,000 candidates (the cost is candidates x overlap pixels)
        positions = (h - block + 1) * (w - block + 1)
        stride = max(stride, math.ceil(math.sqrt(positions / max_candidates)))
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
                    # the expanded squares cancel: clamp at 0, else a slightly negative minimum times
                    # (1 + tol) lies below every candidate and nothing is chosen (the crash issue 19 saw)
                    err = np.maximum(err, 0)
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
    from engine.texture.evaluation import RandomFeatures, _tensor, gram_distances, real_sets

    fake = _tensor(samples)
    real_a, real_b = real_sets(images, fake.shape[-1], max(len(fake), 8), seed, swap)
    net = RandomFeatures(fake.shape[1])
    return float(gram_distances(fake, real_a, net).median() / gram_distances(real_b[:len(fake)], real_a, net).median())


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


# --- the development suite (issue 19): train each exemplar as a user would, measure, compare --------

SUITE = ROOT / "bench" / "data" / "textures"
SHEETS = ROOT / "docs" / "textures"
RATIOS = ("gram", "swd", "spectrum", "elements")  # each a ratio to real-vs-real (ideal 1)
REFERENCE_DRAWS = 8  # reference sets each ratio sums over (`ratios`)
COARSE = 4  # the coarse scale: 1024² outputs and the exemplar, both downsampled 4x
LATTICE_PICTURES = 48  # ours' pictures at the fine scale for the lattice measure
SEAM_PICTURES = 64  # ours' 1024² pictures the seam ratio is pooled over (the coarse figures' and more)
SWEEP_SIZE, SWEEP_SEEDS = 512, 16  # each of seeds 0-15 at a size users ask for, scored on its own


def suite_materials(only: set[str] | None = None) -> list[tuple[str, str, Path]]:
    """(name, category, colour map) of every suite material, from SOURCES.md's file table."""
    rows = [line.strip("|").split("|") for line in (SUITE / "SOURCES.md").read_text().splitlines()
            if line.startswith("| ") and "_Color." in line]
    out = [(cells[1].strip(), cells[2].strip(), SUITE / cells[0].strip()) for cells in rows]
    return [m for m in out if not only or m[0] in only]


def train_command(name: str, source: Path, models: Path, minutes: float | None) -> list[str]:
    """The plain command a user types, on a photo (the colour map) or on a material's folder of maps."""
    cmd = [sys.executable, "-m", "engine.cli.main", "train", "texture", "--images", str(source.relative_to(ROOT)),
           "--name", name, "--models-dir", str(models)]
    return cmd + (["--minutes", f"{minutes:g}"] if minutes else [])


def eval_side(img: np.ndarray, most: int = 256) -> int:
    """The largest square crop (<= most, a multiple of 16) that real_sets can take from each half."""
    h, w = img.shape[:2]
    return min(most, max(h, w) // 2, min(h, w)) // 16 * 16


def downsample(x: torch.Tensor | np.ndarray, factor: int) -> torch.Tensor:
    """float [N, C, H, W] (or uint8 [N, H, W, C]) -> float [N, C, H/f, W/f] in [-1, 1], box filter."""
    import torch.nn.functional as F

    from engine.texture.evaluation import _tensor
    return F.avg_pool2d(_tensor(x), factor)


def ratios(sets: dict[str, np.ndarray | torch.Tensor], images: list[np.ndarray], seed: int
           ) -> dict[str, dict[str, float]]:
    """RATIOS of each set of samples (same side) against the exemplar (the distances of
    engine.texture.evaluation, as texture_metrics takes them, without the figures the suite does
    not print): its distance to a set of real crops from one half, over the distance of the other
    half's crops to it, each summed over REFERENCE_DRAWS such sets (seeds seed, seed + 1, ..., each
    half as the reference in turn). A ratio of sums, not a ratio per draw: where the halves hold
    large regions of different colour (bark's grey and brown, marble's slabs) one draw's crops can
    land alike in both halves, and its small yardstick made the photo's own crops read 4.13
    (marble's Gram) where eight draws read 1.14."""
    from skimage.filters import threshold_otsu

    from engine.texture.evaluation import (RandomFeatures, _blurred_luminance, _ratio, _tensor, element_features,
                                           element_gap, gram_gap, pooled_grams, power_spectrum, real_sets, swd)

    sets = {name: _tensor(x) for name, x in sets.items()}
    first = next(iter(sets.values()))
    side, n = first.shape[-1], max(8, *(len(x) for x in sets.values()))
    net = RandomFeatures(first.shape[1])
    made = {name: (x, pooled_grams(x, net), power_spectrum(x), _blurred_luminance(x)) for name, x in sets.items()}
    totals = {name: dict.fromkeys(RATIOS, 0.0) for name in [*sets, "halves"]}
    for draw in range(REFERENCE_DRAWS):
        a, b = real_sets(images, side, n, seed + draw // 2, swap=draw % 2 == 1)
        ref_grams, ref_spectrum, ref_lum = pooled_grams(a, net), power_spectrum(a), _blurred_luminance(a)
        threshold = float(threshold_otsu(ref_lum))
        ref_elements = element_features(ref_lum, threshold)
        for name, (x, pooled, spectrum, lum) in [*made.items(),
                                                 ("halves", (b, pooled_grams(b, net), power_spectrum(b),
                                                             _blurred_luminance(b)))]:
            total = totals[name]
            total["gram"] += gram_gap(pooled, ref_grams)
            total["swd"] += swd(x, a, seed)
            total["spectrum"] += float((spectrum - ref_spectrum).abs().mean())
            total["elements"] += element_gap(element_features(lum, threshold), ref_elements)
    return {name: {k: _ratio(totals[name][k], totals["halves"][k]) for k in RATIOS} for name in sets}


def tiles(big: torch.Tensor, side: int) -> torch.Tensor:
    """Non-overlapping side x side crops of every picture in [N, C, H, W]."""
    n, c, h, w = big.shape
    return big[:, :, : h // side * side, : w // side * side].unfold(2, side, side).unfold(3, side, side) \
        .permute(0, 2, 3, 1, 4, 5).reshape(-1, c, side, side)


def stacked(model, side: int, seed: int) -> np.ndarray:
    """`generate_maps`' colour and every map the model makes, stacked as its training exemplar is, as
    the figures score them (`in_windows`)."""
    from engine.texture.evaluation import in_windows
    maps = model.generate_maps(side, side, seed=seed, tileable=not in_windows(model))
    return np.concatenate([maps[k].reshape(side, side, -1) for k in model.layout], -1)


def map_figures(fine: dict[str, np.ndarray], images: list[np.ndarray], layout: dict[str, slice],
                seed: int) -> dict[str, dict[str, float]]:
    """For a material's set: the fine-scale ratios of each map (normal, roughness, ...) on its own,
    per method, keyed "normal.gram" ...; and how far ours' normals are from unit length as the
    8-bit files hold them (mean | ||n|| - 1 |; uint8 rounding alone gives about 2e-3)."""
    out = {name: {} for name in fine}
    for key, part in layout.items():
        if key == "image":
            continue
        per_method = ratios({name: x[..., part] for name, x in fine.items()}, [im[..., part] for im in images], seed)
        for name, r in per_method.items():
            out[name].update({f"{key}.{k}": v for k, v in r.items()})
    if "normal" in layout:
        n = fine["ours"][..., layout["normal"]].astype(np.float64) / 255 * 2 - 1
        out["ours"]["normal.unit"] = float(np.abs(np.linalg.norm(n, axis=-1) - 1).mean())
    return out


def measure(model, images: list[np.ndarray], quilter: Quilter, n: int, n_big: int, seed: int = 0) -> dict:
    """Every figure of one exemplar, for ours, quilting and the exemplar's own crops (the floor). For
    a model of a material's maps, `images` and the quilter hold them all: the figures are the
    colour's, and map_figures adds each map's."""
    from engine.texture.evaluation import lattice, lattice_null, picture_ratios, seam_ratio, tile_error
    from engine.texture.generation import to_uint8
    from engine.texture.images import ImageCrops

    as_uint8 = lambda x: np.round(x * 255).astype(np.uint8)
    colour = model.layout["image"]
    s = eval_side(images[0])
    seeds = range(100 + seed, 100 + seed + n)
    fine = {
        "ours": np.stack([stacked(model, s, i) for i in seeds]),
        "quilting": np.stack([as_uint8(quilter.synthesize(s, s, seed=i)) for i in seeds]),
        "crops": to_uint8(ImageCrops(images, s, flips=False, rot90=False, fair_edges=True, seed=seed)
                          .batch(np.arange(n))),
    }
    big, timing = {"ours": [], "quilting": []}, {"ours": [], "quilting": []}
    for i in range(n_big):
        for name, make in (("ours", lambda i=i: model.generate(1024, 1024, seed=500 + i)),
                           ("quilting", lambda i=i: as_uint8(quilter.synthesize(1024, 1024, seed=500 + i)[..., colour]))):
            start = time.perf_counter()
            big[name].append(make())
            timing[name].append(time.perf_counter() - start)
    maps = map_figures(fine, images, model.layout, seed) if model.maps else {}
    fine = {name: x[..., colour] for name, x in fine.items()}
    images = [im[..., colour] for im in images]
    small = [downsample(im.transpose(2, 0, 1)[None], COARSE)[0].permute(1, 2, 0).numpy() for im in images]
    c = eval_side(small[0], most=128)
    coarse = {name: tiles(downsample(np.stack(b), COARSE), c) for name, b in big.items()}
    coarse["crops"] = ImageCrops(small, c, flips=False, rot90=False, fair_edges=True, seed=seed).batch(
        np.arange(len(coarse["ours"])))
    fine_ratios, coarse_ratios = ratios(fine, images, seed), ratios(coarse, small, seed)
    out = {name: {**fine_ratios[name], **{f"c.{key}": v for key, v in coarse_ratios[name].items()},
                  **maps.get(name, {})} for name in fine}
    for name, make in (("ours", lambda i: model.generate(SWEEP_SIZE, SWEEP_SIZE, seed=i)),
                       ("quilting", lambda i: as_uint8(quilter.synthesize(SWEEP_SIZE, SWEEP_SIZE, seed=i)[..., colour]))):
        per_seed = picture_ratios(np.stack([make(i) for i in range(SWEEP_SEEDS)]), images, seed)
        out[name] |= {"seed.med": float(np.median(per_seed)), "seed.worst": float(per_seed.max())}
    # Pooled over SEAM_PICTURES at 1024²: the wrap line is one line of a picture, and whether a joint
    # falls on it swings the ratio (one model's 64 pictures: tiles 0.82-3.21 one by one; planks 0.52-5.02,
    # a board's edge on the line, 1.16 pooled over the first 16 and 1.00 over all 64).
    more = [model.generate(1024, 1024, seed=500 + i) for i in range(n_big, SEAM_PICTURES)]
    out["ours"]["seam"] = seam_ratio(np.stack(big["ours"] + more))
    # The lattice needs more pictures than the ratios: on 16 of bark it read 0.93 or 1.07 with the
    # seeds. Beside it, the same pictures each shifted by a random offset (they tile), so that no
    # grid lines up: how far that is from 1 is the measure's own noise.
    grid = np.stack([model.generate(s, s, seed=i) for i in range(100 + seed, 100 + seed + LATTICE_PICTURES)])
    out["ours"]["lattice"], out["ours"]["lattice.null"] = lattice(grid), lattice_null(grid, seed)
    out["ours"]["tile"] = max(tile_error(model.G, s), tile_error(model.G, 2 * s, 1))
    out["ours"]["s/1024"] = min(timing["ours"])
    out["quilting"]["s/1024"] = min(timing["quilting"])
    return out


LIGHT = np.array([-0.5, 0.5, 0.7]) / np.linalg.norm([-0.5, 0.5, 0.7])  # from the upper left and the front


def relief(normal: np.ndarray) -> np.ndarray:
    """uint8 grey HxWx3: unit normals HxWx3 in [-1, 1] shaded under LIGHT, the relief a normal map
    gives a surface in Blender."""
    shade = np.round(255 * (0.15 + 0.85 * np.clip(normal @ LIGHT, 0, 1))).astype(np.uint8)
    return np.repeat(shade[..., None], 3, -1)


def contact_sheet(name: str, colour: Path, model, quilter: Quilter, note: str, exemplar: np.ndarray,
                  side: int = 384) -> Path:
    """exemplar | ours | quilting | ours tiled 2x2, each side x side at 1:1, into docs/textures/NAME.jpg;
    for a model with a normal map a second row, each panel's normals lit (`relief`). `exemplar` is the
    stacked float image the model was trained on."""
    from PIL import Image, ImageDraw

    rgb = lambda a: np.repeat(a, 3, -1) if a.shape[-1] == 1 else a[..., :3]
    ex = np.asarray(Image.open(colour).convert("RGB").reduce(model.config.exemplar_shrink))  # as training read it
    side = min(side, *ex.shape[:2]) // model.stride * model.stride
    half = side // 2 // model.stride * model.stride
    ours, tiled = model.generate_maps(side, side, seed=1), model.generate_maps(half, half, seed=2)
    quilted = quilter.synthesize(side, side, seed=1)
    to_u8 = lambda a: np.round(a * 255).astype(np.uint8)
    panels = [("exemplar (1:1 crop)", ex[:side, :side]), ("ours", rgb(ours["image"])),
              ("image quilting", rgb(to_u8(quilted[..., model.layout["image"]]))),
              ("ours, 2x2 tiling", np.tile(rgb(tiled["image"]), (2, 2, 1)))]
    rows = [panels]
    if "normal" in model.layout:
        normal = model.layout["normal"]
        as_unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
        from_u8 = lambda a: as_unit(a.astype(np.float64) / 127.5 - 1)
        reliefs = [relief(as_unit(exemplar[:side, :side, normal])), relief(from_u8(ours["normal"])),
                   relief(as_unit(quilted[..., normal] * 2 - 1)), relief(np.tile(from_u8(tiled["normal"]), (2, 2, 1)))]
        rows.append([(f"{title}: its normals, lit", picture) for (title, _), picture in zip(panels, reliefs)])
    pad, label = 6, 16
    sheet = Image.new("RGB", (4 * side + 5 * pad, label + len(rows) * (side + label + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad), f"{name}: {note}", fill="black")
    for r, row in enumerate(rows):
        y = pad + label + r * (side + label + pad)
        for i, (title, a) in enumerate(row):
            x = pad + i * (side + pad)
            draw.text((x, y), title, fill="black")
            sheet.paste(Image.fromarray(a[:side, :side]), (x, y + label))
    SHEETS.mkdir(parents=True, exist_ok=True)
    path = SHEETS / f"{name}.jpg"
    sheet.save(path, quality=88)
    return path


def print_table(title: str, rows: dict[str, dict[str, float]], keys: list[str]) -> None:
    print(f"\n{title}")
    widths = [max(11, len(k) + 2) for k in keys]
    print(f"{'exemplar':>12}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths)))
    for name, row in rows.items():
        print(f"{name:>12}" + "".join(f"{row.get(k, float('nan')):>{w}.3g}" for k, w in zip(keys, widths)))
    for label, fn in (("median", np.nanmedian), ("worst", None)):
        cells = []
        for k in keys:
            v = np.array([r.get(k, np.nan) for r in rows.values()], float)
            two_sided = k in ("seam", "lattice", "lattice.null")  # ideal 1: the worst is the furthest either way
            worst = v[np.nanargmax(np.abs(np.log(np.abs(v) + 1e-12)))] if two_sided else np.nanmax(v)
            cells.append(fn(v) if fn else worst)
        print(f"{label:>12}" + "".join(f"{c:>{w}.3g}" for c, w in zip(cells, widths)))


def steps_per_minute(run: Path) -> float:
    """Training throughput from the run's log (the stored training minutes also count the final
    calibration and evaluation, minutes on a busy machine)."""
    import json

    lines = (run / "log.jsonl").read_text().splitlines() if (run / "log.jsonl").exists() else []
    last = json.loads(lines[-1]) if lines else {}
    return 60 * last["step"] / last["seconds"] if last.get("seconds") else float("nan")


def run_suite(args) -> int:
    import tempfile

    import torch

    from engine.texture.objective import resolve_images

    materials = suite_materials(set(args.only.split(",")) if args.only else None)
    models = args.models_dir or Path(tempfile.gettempdir()) / "atelier-texture-suite"
    budget = f"--minutes {args.minutes:g} (shortened for development: NOT the default budget)" if args.minutes \
        else "the default budget (no flags)"
    print(f"machine: {machine()}; torch {torch.__version__}; {len(materials)} suite exemplars, each trained with "
          f"`atelier train texture --images <colour map> --name N` and {budget}; models in {models}")
    results: dict[str, dict] = {}
    for name, category, colour in materials:
        is_set = args.maps and len(list(colour.parent.iterdir())) > 1
        source, model_name = (colour.parent, f"suite-{name}-set") if is_set else (colour, f"suite-{name}")
        cmd = train_command(model_name, source, models, args.minutes)
        if not (args.reuse and (models / f"{model_name}.safetensors").exists()):
            print(f"\n$ {' '.join(cmd[3:]).replace('train texture', 'atelier train texture', 1)}", flush=True)
            start = time.time()
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                print(f"{name}: training failed ({done.returncode}): {done.stderr.strip()[-800:]}", flush=True)
                continue
            print(f"{name}: trained in {(time.time() - start) / 60:.1f} min wall", flush=True)
        stored = models / f"{model_name}.bench.json"
        if args.reuse and stored.exists() and stored.stat().st_mtime > (models / f"{model_name}.safetensors").stat().st_mtime:
            results[name] = json.loads(stored.read_text())  # measured by an earlier run (e.g. half the suite per core)
            print(f"{name}: measured before, {stored}", flush=True)
            continue
        metadata, model = load_model(model_name, models, "cpu")
        images, _ = resolve_images(str(source), model.channels, model.config.crop, model.config.exemplar_shrink)
        quilter = Quilter((images[0] + 1) / 2)
        start = time.time()
        m = measure(model, images, quilter, args.samples, args.big)
        measured = (time.time() - start) / 60
        steps, minutes = metadata.get("step"), metadata.get("train_seconds", 0) / 60
        m["ours"].update(steps=steps, min=minutes, **{"steps/min": steps_per_minute(models / f"{model_name}.run")})
        factor = model.config.exemplar_shrink
        shrunk = f"; the photo shrunk {factor}x, as training read it" if factor > 1 else ""
        note = (f"{category}; ours trained {minutes:.1f} min, {steps} steps, {model.channels} channel(s); "
                f"quilting: block {quilter.block}{shrunk}")
        m["sheet"] = contact_sheet(name, colour, model, quilter, note, images[0])
        results[name] = m
        stored.write_text(json.dumps({k: v for k, v in m.items() if k != "sheet"}, default=float))
        row = m["ours"]
        print(f"{name}: gram {row['gram']:.2f} swd {row['swd']:.2f} spectrum {row['spectrum']:.2f} elements "
              f"{row['elements']:.2f} | coarse {row['c.gram']:.2f} {row['c.swd']:.2f} {row['c.spectrum']:.2f} "
              f"{row['c.elements']:.2f} | seeds {row['seed.med']:.2f} worst {row['seed.worst']:.2f} "
              f"| lattice {row['lattice']:.3f} seam {row['seam']:.2f} tile {row['tile']:.1e}"
              f" | {steps} steps, {minutes:.1f} min | measured in {measured:.1f} min | sheet "
              f"{m['sheet'].relative_to(ROOT)}", flush=True)
    if not results:
        return 1
    report(results, args)
    return 0


def report(results: dict[str, dict], args) -> None:
    quality = list(RATIOS) + [f"c.{k}" for k in RATIOS]
    print(f"\nquality: ratios to real-vs-real (ideal 1) at 256² (or the largest crop each half of a smaller "
          f"exemplar holds), {args.samples} samples, distances summed over {REFERENCE_DRAWS} reference draws (both "
          "halves in turn); c.* at the coarse scale: "
          f"{args.big} outputs of 1024² and the exemplar downsampled {COARSE}x, in crops of up to 128². "
          "elements: the shapes of connected components. lattice: gradient energy on 4/8/16-px lines over elsewhere "
          "(ideal 1.00 ± 0.05; lattice.null: the same pictures shifted at random, the measure's own noise). "
          f"seed.*: seeds 0-{SWEEP_SEEDS - 1} at {SWEEP_SIZE}², each picture's Gram distance to "
          "the exemplar over a single crop's, median and worst")
    for method in ("ours", "quilting", "crops"):
        keys = quality + (["lattice", "lattice.null", "seed.med", "seed.worst", "seam", "tile", "s/1024", "steps",
                           "steps/min", "min"] if method == "ours" else [])
        keys += ["seed.med", "seed.worst", "s/1024"] if method == "quilting" else []
        print_table({"ours": "ours (the model as generate delivers it)", "quilting": "image quilting (same exemplars)",
                     "crops": "the exemplar's own crops (the floor: what a perfect model scores)"}[method],
                    {n: r[method] for n, r in results.items()}, keys)
    ours = {k: np.array([r["ours"][k] for r in results.values()], float) for k in quality + ["lattice", "seam", "tile"]}
    theirs = {k: np.array([r["quilting"][k] for r in results.values()], float) for k in quality}
    null = np.array([r["ours"].get("lattice.null", np.nan) for r in results.values()], float)
    speed = np.median([r["quilting"]["s/1024"] / r["ours"]["s/1024"] for r in results.values()])
    verdict = lambda ok: "PASS" if ok else "FAIL"
    def goal(key: str, ours: np.ndarray, theirs: np.ndarray) -> None:
        med, worst, q = np.nanmedian(ours), np.nanmax(ours), np.nanmedian(theirs)
        print(f"  {key:>11}: median {med:.2f} <= 1.3 {verdict(med <= 1.3)}; worst {worst:.2f} <= 2.0 "
              f"{verdict(worst <= 2.0)}; quilting's median {q:.2f}, ours no worse {verdict(med <= q)}")

    print("\ngoals (issue 19), ours over the suite:")
    for k in quality:
        goal(k, ours[k], theirs[k])
    print(f"  tile error: max {ours['tile'].max():.1e} <= 1e-5 {verdict(ours['tile'].max() <= 1e-5)}")
    print(f"  seam ratio: {ours['seam'].min():.2f}..{ours['seam'].max():.2f} within 0.9-1.1 "
          f"{verdict(((ours['seam'] >= 0.9) & (ours['seam'] <= 1.1)).all())}")
    print(f"  lattice: {ours['lattice'].min():.3f}..{ours['lattice'].max():.3f} within 1.00 ± 0.05 "
          f"{verdict((np.abs(ours['lattice'] - 1) <= 0.05).all())} (shifted at random: "
          f"{np.nanmin(null):.3f}..{np.nanmax(null):.3f})")
    print(f"  speed at 1024²: quilting / ours, median {speed:.0f}x >= 20x {verdict(speed >= 20)}")
    for map_name in sorted({k.split(".")[0] for r in results.values() for k in r["ours"] if k.endswith(".gram")} - {"c"}):
        keys = [f"{map_name}.{k}" for k in RATIOS]
        sets = {n: r for n, r in results.items() if keys[0] in r["ours"]}
        for method in ("ours", "quilting", "crops"):
            print_table(f"{map_name} map of the full sets, {method}", {n: r[method] for n, r in sets.items()},
                        keys + (["normal.unit"] if map_name == "normal" and method == "ours" else []))
        print(f"goals for the {map_name} map over {len(sets)} sets:")
        for k in keys:
            goal(k, np.array([r["ours"][k] for r in sets.values()], float),
                 np.array([r["quilting"][k] for r in sets.values()], float))
        if map_name == "normal":
            unit = max(r["ours"]["normal.unit"] for r in sets.values())
            print(f"  mean | |normal| - 1 | as 8-bit files hold them: worst {unit:.1e} (8-bit rounding alone ~2e-3; "
                  "the float normals are unit length, tests/texture/test_pbr.py)")
    if args.minutes:
        print(f"  (trained with --minutes {args.minutes:g}, not the default budget: development figures only)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="texture-default")
    parser.add_argument("--models-dir", type=Path, help="where --model lives (default: the shipped models)")
    parser.add_argument("--images", help="exemplar (default: what the model was trained on)")
    parser.add_argument("--sizes", default="512,1024,2048", help="output sides to time")
    parser.add_argument("--eval-size", type=int, default=256, help="side of the samples the metrics compare")
    parser.add_argument("--samples", type=int, default=48, help="samples per method for the quality metrics at "
                        "the fine scale (a ratio moves with the count)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats for each method (best is kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--suite", action="store_true",
                        help="train every exemplar of bench/data/textures with the default command and measure it "
                             "beside image quilting; contact sheets into docs/textures/")
    parser.add_argument("--minutes", type=float, help="--suite: shorten each training run (development only)")
    parser.add_argument("--only", help="--suite: comma-separated material names")
    parser.add_argument("--maps", action="store_true", help="--suite: train each full PBR set as a user with the "
                        "set would (its folder) and add each map's figures; photos alone otherwise")
    parser.add_argument("--reuse", action="store_true", help="--suite: measure models already in --models-dir (measurements stored there by an earlier run are reused)")
    parser.add_argument("--big", type=int, default=4, help="--suite: 1024² outputs per method for the coarse scale")
    args = parser.parse_args(argv)
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
    if args.suite:
        return run_suite(args)
    from engine.texture.evaluation import lattice, reference_ratios, seam_ratio, tile_error
    from engine.texture.generation import TextureModel, to_uint8
    from engine.texture.images import ImageCrops
    from engine.texture.objective import resolve_images

    metadata, model = load_model(args.model, args.models_dir, args.device)
    source = exemplar_source(metadata, args.images)
    images, _ = resolve_images(source, model.channels, model.config.crop, model.config.exemplar_shrink)
    args.eval_size = min(args.eval_size, eval_side(images[0]))  # any exemplar >= the crop: smaller samples
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
    uncalibrated = dict.fromkeys(("image_moments", "spectrum_gain", "orientation_gain", "colour_mix", "field_gain",
                                  "tone_curve", "lattice_filter"))
    raw = TextureModel(dataclasses.replace(model.config, **uncalibrated), model.G, args.device)
    as_uint8 = lambda x: np.round(x * 255).astype(np.uint8)
    seeds = range(100, 100 + n)
    crops = ImageCrops(images, s, flips=False, rot90=False, fair_edges=True, seed=100).batch(np.arange(n))
    sets = {
        "ours": np.stack([model.generate(s, s, seed=i) for i in seeds]),
        "ours raw": np.stack([raw.generate(s, s, seed=i) for i in seeds]),
        "quilting": np.stack([as_uint8(quilter.synthesize(s, s, seed=i)) for i in seeds]),
        # the texture itself, every part of the photo counted alike (as the calibration counts it):
        # what a perfect model would score, i.e. how finely the metrics can tell
        "exemplar crops": to_uint8(crops),
    }
    # The yardstick of `atelier eval` and the suite: each method's distances summed over the same
    # REFERENCE_DRAWS reference sets (each half of the exemplar in turn), over the held-out crops'.
    scores = {name: reference_ratios(x, images, seed=0, repeats=REFERENCE_DRAWS)
              | {"gram/picture": np.mean([gram_per_picture(x, images, 0, swap) for swap in (False, True)]),
                 "lattice": lattice(x)}
              for name, x in sets.items()}
    print(f"\nquality at {s}x{s}: {n} samples per method; ratios to real-vs-real (ideal 1; diversity and "
          f"nearest_patch << 1 mean collapse or copying), distances summed over {REFERENCE_DRAWS} reference sets, "
          "± the jackknife's standard error over them")
    print(f"{'metric':>14}" + "".join(f"{name:>16}" for name in scores))
    for key in [k for k in scores["ours"] if not k.endswith("_se")]:
        cells = [f"{m[key]:.2f}" + (f" ± {m[key + '_se']:.2f}" if key + "_se" in m else "") for m in scores.values()]
        print(f"{key:>14}" + "".join(f"{c:>16}" for c in cells))
    big = sizes[-1]
    seams = [seam_ratio(model.generate(big, big, seed=3)[None]), seam_ratio(raw.generate(big, big, seed=3)[None]),
             seam_ratio(as_uint8(quilter.synthesize(big, big, seed=3))[None])]
    print(f"{'seam ' + str(big):>14}" + "".join(f"{x:>16.2f}" for x in seams))
    print(f"{'tile_error':>14}{max(tile_error(model.G, s), tile_error(model.G, 2 * s, 1)):>16.1e}{'':>16}{'n/a':>16}"
          "  (max |tile(G(z)) - G(tile(z))|; quilting cannot tile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
