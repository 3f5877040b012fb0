"""A material set as the engine makes it and as `atelier generate` delivers it, end to end.

    python bench/texture_cli_speed.py [--model texture-planks] [--size 1024] [--runs 6] [--baseline DIR]

Per checkout: `generate_maps` in process (one torch thread; best and median of --runs), the CLI's
PNG writing (best of 3), and `atelier generate texture --size N --engine --out X.png` timed from
the shell against a running engine (`atelier serve` on a free port, its own state folder). With
--baseline DIR (another checkout, e.g. `git worktree add DIR <commit>`) the same for it, both
engines up at once and the CLI calls interleaved, so both see the same machine. Run it on one
core (e.g. `/tmp/cpu1`): engine and CLI then share it, as the figures in docs/BENCHMARKS.md do.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = "import sys; from engine.cli.main import main; sys.argv = ['atelier'] + sys.argv[1:]; sys.exit(main())"
IN_PROCESS = """
import json, sys, time
from pathlib import Path
from engine.store.checkpoints import BUILTIN_DIR, load_file
from engine.texture.generation import load
from engine.texture.ops import write_output
name, size, runs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
meta, weights = load_file(BUILTIN_DIR / f"{name}.safetensors")
model = load(meta["config"], weights)
model.generate_maps(size, size, seed=0)
times = []
for _ in range(runs):
    t = time.perf_counter(); maps = model.generate_maps(size, size, seed=0); times.append(time.perf_counter() - t)
writes = []
for _ in range(3):
    t = time.perf_counter(); files = write_output("texture.generate", maps, out / "t.png"); writes.append(time.perf_counter() - t)
print(json.dumps({"generate": times, "png": min(writes), "png_bytes": sum(f.stat().st_size for f in files)}))
"""


def in_process(tree: Path, model: str, size: int, runs: int, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, model, str(size), str(runs), str(out)], cwd=tree,
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_engine(tree: Path, state: Path) -> subprocess.Popen:
    env = {**os.environ, "ATELIER_STATE_DIR": str(state), "ATELIER_MODELS_DIR": str(state / "models")}
    engine = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0"], cwd=tree, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        if (state / "engine.json").exists() and (state / "engine.json").stat().st_size:
            return engine
        time.sleep(0.1)
    engine.kill()
    raise RuntimeError(f"the engine in {tree} did not start")


def cli_seconds(tree: Path, state: Path, model: str, size: int, out: Path) -> float:
    env = {**os.environ, "ATELIER_STATE_DIR": str(state), "ATELIER_MODELS_DIR": str(state / "models")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, "generate", "texture", "--model", model, "--size", str(size),
                    "--engine", "--out", str(out / "cli.png")], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="texture-planks")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure beside this one")
    args = parser.parse_args()
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {label: Path(tmp) / label for label in trees}
        for folder in folders.values():
            (folder / "models").mkdir(parents=True)
        for label, tree in trees.items():
            r = in_process(tree, args.model, args.size, args.runs, folders[label])
            print(f"{label}: generate_maps {args.size}² best {min(r['generate']):.3f} s, median "
                  f"{statistics.median(r['generate']):.3f} s; PNGs {r['png']:.3f} s, {r['png_bytes'] / 1e6:.2f} MB")
        engines = [start_engine(tree, folders[label]) for label, tree in trees.items()]
        try:
            seconds = {label: [] for label in trees}
            for label, tree in trees.items():  # warm up: the model loads on the first call
                cli_seconds(tree, folders[label], args.model, args.size, folders[label])
            for _ in range(args.runs):
                for label, tree in trees.items():
                    seconds[label].append(cli_seconds(tree, folders[label], args.model, args.size, folders[label]))
        finally:
            for engine in engines:
                engine.terminate()
                engine.wait(10)
        for label, times in seconds.items():
            print(f"{label}: atelier generate texture --size {args.size} --engine: {min(times):.2f}-{max(times):.2f} s, "
                  f"median {statistics.median(times):.2f} s ({len(times)} runs)")


if __name__ == "__main__":
    main()
