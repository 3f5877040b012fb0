"""Reproduces the stabilisation measurement quoted in docs/BENCHMARKS.md (not a test).

    PYTHONPATH=. .venv/bin/python bench/texture_stabilisation_probe.py [steps] [seeds] [recipe,recipe]

Trains a tiny texture GAN on the procedural `bricks` exemplar with each candidate recipe
through the TextureObjective on the shared trainer and prints the
metric ratios of G_ema samples to the real-vs-real baseline.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from engine.store.checkpoints import ModelStore
from engine.texture.evaluation import texture_metrics
from engine.texture.images import procedural
from engine.texture.model import TextureGANConfig
from engine.texture.objective import TextureObjective
from engine.train import trainer
from engine.train.config import TrainConfig
from engine.train.trainer import TrainRun

TINY = dict(channels=3, g_width=16, g_max_width=128, d_width=16, d_max_width=128, d_layers=3, crop=64,
            n_local=8, n_global=16, n_periodic=2, d_lr_scale=1.0)  # the table predates the 4x D rate
RECIPES = {
    "nonsat": dict(loss="nonsat", spectral_norm=False, r1_gamma=0.0),
    "hinge+SN": dict(loss="hinge", spectral_norm=True, r1_gamma=0.0),
    "nonsat+R1": dict(loss="nonsat", spectral_norm=False, r1_gamma=1.0),
    "hinge+R1": dict(loss="hinge", spectral_norm=False, r1_gamma=1.0),
}


def train(objective: TextureObjective, steps: int, batch: int = 8, lr: float = 2e-4,
          progress=None) -> None:
    """The shared trainer, with the GAN's Adam betas, into a throw-away model store."""
    config = TrainConfig(steps=steps, batch_size=batch, lr=lr, beta1=0.5, beta2=0.99,
                         checkpoint_every=10**9, log_every=100)
    with tempfile.TemporaryDirectory() as folder:
        run = TrainRun(ModelStore(Path(folder), builtin=None), "probe", "texture", torch.device("cpu"))
        trainer.train(objective, config, run, progress=progress)


if __name__ == "__main__":
    torch.set_num_threads(1)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(RECIPES)
    image = procedural("bricks", 256, seed=0)
    for name, recipe in ((n, RECIPES[n]) for n in names):
        for seed in range(seeds):
            torch.manual_seed(seed)
            obj = TextureObjective(TextureGANConfig(**TINY, **recipe), [image], seed=seed)
            t = time.perf_counter()
            train(obj, steps)
            m = texture_metrics(obj.samples(16, 64), obj.images)
            print(f"{name:10s} seed {seed}: " + " ".join(f"{k} {v:.2f}" for k, v in m.items())
                  + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
