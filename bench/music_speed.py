"""Generation and streaming speed of a stored music model, as multiples of real time at 120 BPM,
with its defaults as the engine applies them (voice limit and part-writing rule from its data
summary), optionally while a busy loop keeps the other core busy (issue 21: >= 300x).

    /tmp/cpu2 .venv/bin/python bench/music_speed.py --busy            # the shipped model, core 0, hog on core 1
    .venv/bin/python bench/music_speed.py WEIGHTS --profile            # where the time goes (cProfile)
"""
from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import os
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from music_bench import generate_speed, stream_speed  # noqa: E402

from engine.music.generation import avoids_parallels, load, trained_voices  # noqa: E402
from engine.store.checkpoints import BUILTIN_DIR, load_file  # noqa: E402


def _spin(core: int) -> None:
    os.sched_setaffinity(0, {core})
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="?", default=str(BUILTIN_DIR / "music-default.safetensors"))
    ap.add_argument("--busy", action="store_true", help="pin this process to core 0 and busy-loop on core 1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of generate")
    ap.add_argument("--rule", choices=("auto", "on", "off"), default="auto",
                    help="the part-writing rule (no_parallels): as the engine sets it from the model's data, or on/off")
    args = ap.parse_args()
    torch.set_num_threads(1)
    metadata, weights = load_file(Path(args.weights))
    model = load(metadata["config"], weights)
    model.voices = trained_voices(metadata)
    model.avoids_parallels = avoids_parallels(metadata) if args.rule == "auto" else args.rule == "on"
    hog = None
    if args.busy:
        os.sched_setaffinity(0, {0})
        hog = multiprocessing.Process(target=_spin, args=(1,), daemon=True)
        hog.start()
    try:
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(model.generate, bars=16, seed=0)
            pstats.Stats(profile).sort_stats("tottime").print_stats(18)
        result = {"weights": args.weights, "voices": model.voices, "no_parallels_default": model.avoids_parallels,
                  "busy_other_core": args.busy, "load_avg": os.getloadavg()[0],
                  "generate_x_realtime_120bpm": generate_speed(model, repeats=args.repeats),
                  "stream": stream_speed(model, repeats=args.repeats)}
    finally:
        if hog is not None:
            hog.terminate()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
