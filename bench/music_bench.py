"""JSB quarter-note benchmark for the music kind, in one run.

Trains the token RNN and the independent-Bernoulli LSTM baseline side by side for a time
budget (a plain Adam loop over MusicObjective; the shared trainer does the same job in the
product), then prints the exact frame NLL of both on the JSB quarter-note test split, the
training minutes, and generation speed as a multiple of real time at 120 BPM.

    .venv/bin/python bench/music_bench.py --jsb ../shared/datasets/jsb --minutes 1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from engine.data.jsb import default_jsb_dir, load_jsb
from engine.kinds.music import MusicModel, MusicObjective
from engine.kinds.music_eval import frame_nll
from engine.kinds.music_sampling import Controls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsb", type=Path, default=default_jsb_dir())
    ap.add_argument("--minutes", type=float, default=1.0, help="training budget, both nets together")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = {"steps_per_quarter": 1, "seq_steps": 64, "transpose": 6,
              "model": {"d_hidden": args.hidden, "n_layers": args.layers, "bar_steps": 4, "dropout": 0.2},
              "baseline": {"d_hidden": args.hidden, "n_layers": 1}}
    obj = MusicObjective(config, jsb=args.jsb, device=args.device)
    opts = {g: torch.optim.Adam(ps, lr=args.lr) for g, ps in obj.param_groups().items()}
    t0, step = time.time(), 0
    while time.time() - t0 < args.minutes * 60:
        batch = obj.batch(torch.arange(step * args.batch, (step + 1) * args.batch))
        logs = {}
        for group, opt in opts.items():
            loss, group_logs = obj.loss(group, batch, step)
            logs.update(group_logs)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(obj.nets[group].parameters(), 1.0)
            opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} {time.time() - t0:.0f}s " + " ".join(f"{k} {v:.3f}" for k, v in logs.items()), flush=True)
    minutes = (time.time() - t0) / 60
    test = load_jsb(args.jsb, "quarter")["test"]
    ours = frame_nll(obj.nets["rnn"], test, args.device)
    base = frame_nll(obj.nets["baseline"], test, args.device)

    model = MusicModel(obj.nets["rnn"], obj.config)
    t = time.time()
    roll = model.generate(bars=16, controls=Controls(), seed=0)
    gen_s = time.time() - t
    music_s = len(roll) * 60 / 120  # quarter-note steps at 120 BPM
    print(json.dumps({"test_nll": round(ours["nll"], 3), "baseline_test_nll": round(base["nll"], 3),
                      "test_steps": ours["steps"], "train_minutes": round(minutes, 2), "train_batches": step,
                      "generation_x_realtime_120bpm": round(music_s / gen_s, 1)}, indent=1))


if __name__ == "__main__":
    main()
