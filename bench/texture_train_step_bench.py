"""Texture training step time: the step as trained against the way it was done before.

    python bench/texture_train_step_bench.py [--threads 2] [--rounds 6] [--steps 40]

The texture recipe trains for a fixed 10 minutes, so a faster step is more steps. Times steps
of the shipped recipe's model on gravel (batch 8, 96 px crops) in alternating rounds, so both
see the same machine load:
- ours: the G step reuses the fakes the D step made (with their graph) and computes no
  gradient for D's weights (TextureObjective.loss);
- before: the D step ran G without a graph, and the G step ran G a second time on the same
  noise and backpropagated into D's weights too (then thrown away). Both give G the same
  gradient.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from texture_bench import machine  # noqa: E402

from engine.store.checkpoints import ModelStore  # noqa: E402
from engine.texture.model import TextureGANConfig, g_loss  # noqa: E402
from engine.texture.objective import TextureObjective  # noqa: E402
from engine.train.config import TrainConfig  # noqa: E402
from engine.train.trainer import TrainRun, _make_optimizer, _step  # noqa: E402


class GTwice(TextureObjective):
    def loss(self, group, batch, step):
        if group == "D":  # as before: the D step's fakes carry no graph
            self.nets["G"].requires_grad_(False)
            try:
                return super().loss(group, batch, step)
            finally:
                self.nets["G"].requires_grad_(True)
        self._fake = None
        z = (batch["z_local"], batch["z_global"], batch["phase"])
        loss = g_loss(self.nets["D"](self.nets["G"](*z)), self.config.loss)
        return loss, {"g_loss": loss.item()}


def time_steps(obj: TextureObjective, optimizers: dict, cfg: TrainConfig, run: TrainRun, first: int,
               steps: int) -> float:
    """Milliseconds per training step, as the trainer takes it, over `steps` steps from `first`."""
    started = time.perf_counter()
    for step in range(first, first + steps):
        _step(obj, optimizers, cfg, run, step, cfg.batch_size, 0.0, cfg.minutes * 60)
    return 1000 * (time.perf_counter() - started) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40, help="steps per round (a multiple of 4: R1 every 4th)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); gravel, recipe model, "
          f"batch 8; {args.rounds} alternating rounds of {args.steps} steps")
    cfg = TrainConfig(batch_size=8, lr=2e-4, beta1=0.5, beta2=0.99)  # the recipe's
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainRun(ModelStore(Path(tmp)), "step-bench", "texture", torch.device("cpu"))
        for name, kind in (("ours", TextureObjective), ("before", GTwice)):
            torch.manual_seed(0)
            obj = kind(TextureGANConfig(channels=1), "gravel")
            optimizers = {group: _make_optimizer(params, cfg, obj.lr_scale.get(group, 1.0))
                          for group, params in obj.param_groups().items()}
            time_steps(obj, optimizers, cfg, run, 0, 4)  # warm-up
            runs[name] = (obj, optimizers, [])
        for r in range(args.rounds):
            for obj, optimizers, times in runs.values():
                times.append(time_steps(obj, optimizers, cfg, run, 4 + r * args.steps, args.steps))
    medians = {name: statistics.median(times) for name, (_, _, times) in runs.items()}
    for name, (_, _, times) in runs.items():
        print(f"{name:>7}: median {medians[name]:6.1f} ms/step   rounds " + " ".join(f"{t:.1f}" for t in times))
    print(f"speed-up: {medians['before'] / medians['ours']:.2f}x (steps in the same minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
