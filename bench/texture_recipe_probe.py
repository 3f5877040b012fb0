"""Compares texture GAN recipes in short, equal-step runs (not a test; what it measured is in
docs/BENCHMARKS.md, "Why the recipe is what it is").

    PYTHONPATH=. .venv/bin/python bench/texture_recipe_probe.py NAME EXEMPLAR STEPS '{"upsample": "nearest"}' \
        [--lr 2e-4] [--batch 8] [--no-rot90] [--out /tmp/probe]

Starts from TextureGANConfig's defaults and engine/recipes/texture.toml's [model] section,
applies the JSON overrides, trains through TextureObjective with the shared trainer on one
CPU thread, then prints the metric ratios of 12 raw G_ema samples at 256^2 (no calibration,
one draw against the first half: quick, and noisier than bench/texture_bench.py by about
+-0.1) and writes a sample PNG (three samples and the exemplar) for judging by eye.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from texture_stabilisation_probe import train  # noqa: E402

from engine.texture.evaluation import texture_metrics, tile_error  # noqa: E402
from engine.texture.generation import TextureModel, to_uint8  # noqa: E402
from engine.texture.model import TextureGANConfig  # noqa: E402
from engine.texture.objective import TextureObjective


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("exemplar")
    p.add_argument("steps", type=int)
    p.add_argument("overrides", nargs="?", default="{}")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--no-rot90", action="store_true")
    p.add_argument("--out", type=Path, default=Path("/tmp/probe"))
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tomllib.loads((ROOT / "engine/recipes/texture.toml").read_text())["model"]
    cfg = TextureGANConfig(**{**model, **json.loads(args.overrides)})
    obj = TextureObjective(cfg, args.exemplar, rot90=not args.no_rot90, seed=0)
    t = time.perf_counter()
    train(obj, args.steps, args.batch, args.lr)
    minutes = (time.perf_counter() - t) / 60
    m = TextureModel(cfg, obj.nets["G_ema"])
    samples = np.stack([m.generate(256, 256, seed=100 + i) for i in range(12)])
    metrics = texture_metrics(samples, obj.images)
    metrics["tile_error"] = tile_error(m.G, 128)
    print(f"{args.name:>14} {args.exemplar} {args.steps} steps {minutes:.1f} min: "
          + " ".join(f"{k} {v:.2f}" for k, v in metrics.items()), flush=True)
    from PIL import Image
    ex = to_uint8(torch.from_numpy(obj.images[0][:256, :256]).permute(2, 0, 1)[None])[0]
    row = np.concatenate([ex, *samples[:3]], 1)[..., 0]
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(args.out / f"{args.name}-{args.exemplar}.png")


if __name__ == "__main__":
    main()
