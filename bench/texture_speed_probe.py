"""Where the texture generator's time goes at one size, and what the folded upsampling saves.

    python bench/texture_speed_probe.py [--size 1024] [--threads 1,2]

Times the shipped model's generator stage by stage, with the nearest-upsample + 3x3 conv
computed the plain way (upsample, then conv) and folded (four 2x2 convs at the low
resolution, engine.texture.model.nearest_up_conv), in one run so the ratios hold on a
shared machine; also whole `generate` calls and the largest difference between the two ways.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from texture_bench import best_of  # noqa: E402  (this folder is on the path when run as a script)


def best(fn, repeats: int = 5) -> float:
    """Best of `repeats` after one warm-up call."""
    fn()
    return best_of(fn, repeats)


def stages(G, z: torch.Tensor, folded: bool) -> list[tuple[str, Callable]]:
    """(name, fn) per stage; each fn takes the previous stage's output."""
    from engine.texture.model import nearest_up_conv, upsample2

    def up(conv):
        if folded:
            return lambda x: nearest_up_conv(x, conv.weight, conv.bias)
        return lambda x: conv(upsample2(x, "nearest"))

    out = [("head", lambda _: F.leaky_relu(G.head(z), 0.2))]
    for i, block in enumerate(G.blocks):
        out.append((f"block{i} conv", up(block.conv)))
        out.append((f"block{i} norm+act", lambda x, b=block: F.leaky_relu(b.norm(x), 0.2)))
    out.append(("to image", up(G.out)))
    out.append(("tanh", torch.tanh))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args(argv)
    from engine.store.checkpoints import load_file
    from engine.texture.generation import load

    metadata, weights = load_file(ROOT / "engine" / "weights" / "texture-default.safetensors")
    model = load(metadata["config"], weights)
    G = model.G
    z = G.noise(*G.sample_noise(1, args.size, args.size, torch.Generator().manual_seed(1)))
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        print(f"\n{args.size}^2, {threads} thread(s)          plain s   folded s")
        with torch.inference_mode():
            results = {}
            for folded in (False, True):
                x, rows = None, []
                for name, fn in stages(G, z, folded):
                    seconds = best(lambda: fn(x))
                    x = fn(x)
                    rows.append((name, seconds, tuple(x.shape)))
                results[folded] = (rows, x)
            for (name, plain, shape), (_, fold, _) in zip(results[False][0], results[True][0]):
                print(f"  {name:<18} {plain:8.4f} {fold:9.4f}   -> {list(shape)}")
            total = [sum(r[1] for r in results[f][0]) for f in (False, True)]
            print(f"  {'sum of stages':<18} {total[0]:8.4f} {total[1]:9.4f}")
            diff = (results[False][1] - results[True][1]).abs().max().item()
            print(f"  max |plain - folded| on the image: {diff:.1e}")
        gen = best(lambda: model.generate(args.size, args.size, seed=1))
        print(f"  model.generate (folded, uint8 out): {gen:.4f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
