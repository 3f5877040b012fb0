"""JSB quarter-note benchmark for the music kind, in one run, on the shared trainer.

Trains our LSTM (`--arch token`: one LSTM over pitch tokens; `--arch frame`: an LSTM over time
steps with a within-step token decoder) and the independent-Bernoulli LSTM baseline side by side
(engine.train.trainer.train with MusicObjective: one optimiser per net, same batches),
then prints the exact frame NLL of both on the JSB quarter-note test split (nats per
step, Boulanger-Lewandowski et al. 2012), the training minutes, generation speed and
live-session streaming speed as multiples of real time at 120 BPM.

    .venv/bin/python bench/music_bench.py --minutes 1 --steps 100          # smoke run
    .venv/bin/python bench/music_bench.py --arch frame --hidden 256 --decoder 512 --batch-size 16 \
        --steps 100000 --minutes 58 --threads 1 --dropout 0.35 --weight-decay 0.1 --members 2  # recorded

With --members N it trains N models at once, one process each with its own seed (N cores),
and scores their token-by-token mixture: each model reads the same prefix, so the average of
their next-token distributions is itself a distribution, and the mixture's frame NLL is exact
(engine.music.evaluation.mixture_frame_nll). The mixture is also made into a model as a user
makes one (the music.mix op, `atelier models mix`), stored in --models-dir as jsb-bench-mix,
and scored by the product's eval op (`atelier eval music --model jsb-bench-mix`): both figures
are printed and must agree. The baseline is member 0's; speeds are member 0's and the mixture's.

The shipped model (engine/weights/music-default.safetensors, 16th-note grid with onset
tokens) is also timed streaming, since that is the one the MIDI bridge plays.

With --suite it runs the music style suite instead (bench/music_style.py): corpora music21 ships,
exported to MIDI folders (bench/music_suite.py), each trained with the plain `atelier train music
--midi DIR --name N`, generated from with the music.generate op's defaults, and scored for style
against the held-out pieces beside the independent-Bernoulli baseline trained on the same folder:

    nice -n 10 .venv/bin/python bench/music_bench.py --suite                 # the default time budget
    nice -n 10 .venv/bin/python bench/music_bench.py --suite essen --minutes 3   # shorter, while developing

With --shipped it scores the part writing of a chorale model (default: the shipped one) against the
held-out chorales instead (bench/music_shipped.py):

    .venv/bin/python bench/music_bench.py --shipped --seeds 16 --bars 16 --controls max_polyphony=88
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from engine.music.evaluation import frame_nll, mixture_frame_nll
from engine.music.generation import MusicModel, evaluate_jsb, load, load_baseline
from engine.music.jsb import jsb_dir, load_jsb
from engine.music.objective import MusicObjective
from engine.music.sampling import Controls
from engine.store.checkpoints import BUILTIN_DIR, ModelStore, load_file
from engine.train.config import TrainConfig
from engine.train.trainer import TrainRun, train


def stream_speed(model: MusicModel, beats: int = 64, chunk: int = 4, bpm: float = 120.0,
                 repeats: int = 5) -> dict[str, float]:
    """A live session asked for `chunk` beats at a time: real time over compute time (median of
    `repeats` sessions with different seeds: this machine is shared and noisy), and the slowest call."""
    ratios, slowest, notes = [], 0.0, 0
    for seed in range(repeats):
        session = model.session(seed=seed)
        start = time.perf_counter()
        for _ in range(beats // chunk):
            t = time.perf_counter()
            notes += len(session.next_beats(chunk))
            slowest = max(slowest, time.perf_counter() - t)
        ratios.append(beats * 60.0 / bpm / (time.perf_counter() - start))
    return {"x_realtime": round(statistics.median(ratios), 1), "x_realtime_range": [round(min(ratios), 1),
            round(max(ratios), 1)], "slowest_call_ms": round(slowest * 1000, 1), "chunk_beats": chunk,
            "notes_per_session": notes // repeats}


def generate_speed(model: MusicModel, bars: int = 16, bpm: float = 120.0, repeats: int = 3) -> float:
    """Real time over compute time of `generate`, the median of `repeats` seeds."""
    ratios = []
    for seed in range(repeats):
        t = time.perf_counter()
        roll = model.generate(bars=bars, controls=Controls(), seed=seed)
        ratios.append(len(roll) / model.steps_per_quarter * 60.0 / bpm / (time.perf_counter() - t))
    return round(statistics.median(ratios), 1)


def train_member(args: argparse.Namespace, index: int, models_dir: Path) -> None:
    """Train member `index` (its own seed for weights, data order and augmentation) into
    models_dir as member_name(index), unless --reuse finds it there."""
    torch.set_num_threads(args.threads)
    store = ModelStore(models_dir, builtin=None)
    if args.reuse and store.path(member_name(index)).is_file():
        return
    model = {"d_hidden": args.hidden, "n_layers": args.layers, "bar_steps": 4, "dropout": args.dropout, "arch": args.arch}
    if args.arch == "frame":
        model.update(d_decoder=args.decoder, decoder_layers=args.decoder_layers)
    config = {"steps_per_quarter": 1, "seq_steps": args.seq_steps, "transpose": args.transpose, "model": model,
              "baseline": {"d_hidden": args.baseline_hidden, "n_layers": 1, "dropout": args.dropout}, "seed": index}
    train_cfg = TrainConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                            optimizer="adamw" if args.weight_decay else "adam", weight_decay=args.weight_decay,
                            schedule="cosine", warmup_steps=min(100, args.steps // 10), grad_clip=1.0,
                            checkpoint_every=max(args.steps, 1), log_every=50, seed=index)
    objective = MusicObjective(config, jsb=args.jsb, device=args.device)
    run = TrainRun(store, member_name(index), "music", torch.device(args.device))
    t0 = time.time()
    label = f"[member {index}] " if args.members > 1 else ""

    def progress(fraction: float, message: str, preview=None) -> None:
        step = int(message.split()[1].split("/")[0])
        if step % 100 == 0:
            print(f"{label}{time.time() - t0:6.0f}s {message}", flush=True)

    train(objective, train_cfg, run, progress=progress)


def member_name(index: int) -> str:
    return "jsb-bench" if index == 0 else f"jsb-bench-{index}"


MIXTURE = "jsb-bench-mix"


def make_mixture(args: argparse.Namespace, models_dir: Path) -> dict:
    """The members mixed into one model by the product's own op, and that model scored by the
    product's eval op on the JSB test split: {"valid": ..., "test": ...} NLL."""
    from engine.cli.session import LocalSession

    session = LocalSession(models_dir, args.device)
    try:
        made = session.call("music.mix", {"name": MIXTURE, "models": [member_name(i) for i in range(args.members)]})
        scored = session.call("music.eval", {"model": MIXTURE, "jsb": str(args.jsb), "split": "test"})
    finally:
        session.close()
    return {"valid": made["metrics"].get("valid_nll"), "test": scored["metrics"]["nll"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsb", type=Path, default=jsb_dir(), help="folder of the JSB split (default: $ATELIER_JSB_DIR)")
    ap.add_argument("--suite", nargs="*", metavar="CORPUS",
                    help="run the style suite on these corpora (none named: all) instead of the JSB benchmark")
    ap.add_argument("--cache-dir", type=Path, help="style suite: where the exported corpora are kept "
                    "(default ~/.cache/atelier/music_suite)")
    ap.add_argument("--seeds", type=int, default=16, help="style suite, --shipped: pieces generated per model")
    ap.add_argument("--shipped", nargs="?", const=str(BUILTIN_DIR / "music-default.safetensors"), metavar="WEIGHTS",
                    help="score a chorale model's part writing against the held-out chorales (default: the shipped one)")
    ap.add_argument("--bars", type=float, default=16, help="--shipped: bars per generated piece")
    ap.add_argument("--first-seed", type=int, default=0, help="--shipped: the first of the --seeds seeds")
    ap.add_argument("--controls", action="append", metavar="K=V,...",
                    help="--shipped: one more column generated with these controls, e.g. max_polyphony=88")
    ap.add_argument("--steps", type=int, default=3000, help="trainer steps (the cosine schedule ends here)")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="time budget; 0 = none (style suite: 0 = the default command's own budget)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--arch", choices=("token", "frame"), default="token")
    ap.add_argument("--decoder", type=int, default=256, help="frame: decoder MLP width")
    ap.add_argument("--decoder-layers", type=int, default=2, help="frame: decoder MLP hidden layers")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="with it the optimiser is AdamW")
    ap.add_argument("--transpose", type=int, default=6)
    ap.add_argument("--seq-steps", type=int, default=64)
    ap.add_argument("--baseline-hidden", type=int, default=256)
    ap.add_argument("--members", type=int, default=1,
                    help="train this many models at once, one process each (seeds 0..N-1), and score their "
                         "token-by-token mixture too")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per member")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models-dir", type=Path, help="where the run is kept (default: a temporary folder; the "
                    "style suite keeps each corpus's models in a folder of its name under it)")
    ap.add_argument("--baseline-minutes", type=float,
                    help="style suite: the baseline's budget (default: as ours, --minutes or the default budget)")
    ap.add_argument("--reuse", action="store_true",
                    help="measure the models already trained in --models-dir instead of training again")
    args = ap.parse_args()
    if args.shipped:
        from music_shipped import run_shipped  # bench/, beside this file

        return print(json.dumps(run_shipped(args)))
    if args.suite is not None:
        from music_style import run_suite  # bench/, beside this file

        return run_suite(args)
    if args.jsb is None:
        ap.error("give --jsb FOLDER (or set ATELIER_JSB_DIR), or run --suite")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="music-bench-") as tmp:
        models_dir = args.models_dir or Path(tmp)
        if args.members == 1:
            train_member(args, 0, models_dir)
        else:
            with ProcessPoolExecutor(args.members, mp_context=multiprocessing.get_context("spawn")) as pool:
                for done in [pool.submit(train_member, args, i, models_dir) for i in range(args.members)]:
                    done.result()
        store = ModelStore(models_dir, builtin=None)
        members = [load_file(store.path(member_name(i))) for i in range(args.members)]
        saved, weights = members[0]
        config = saved["config"]
        model = load(config, weights, args.device)
        baseline = load_baseline(config, weights, args.device)
        test = evaluate_jsb(model, baseline, args.jsb, "test")
        valid = evaluate_jsb(model, baseline, args.jsb, "valid")
        mixture = {}
        if args.members > 1:
            rnns = [load(meta["config"], w, args.device).rnn for meta, w in members]
            splits = load_jsb(args.jsb, "quarter")
            mixture = {"test": mixture_frame_nll(rnns, splits["test"], args.device)["nll"],
                       "valid": mixture_frame_nll(rnns, splits["valid"], args.device)["nll"],
                       "members_test": [round(frame_nll(r, splits["test"], args.device)["nll"], 3) for r in rnns],
                       "product": make_mixture(args, models_dir)}
            meta, w = load_file(store.path(MIXTURE))
            mixed = load(meta["config"], w, args.device)
            mixture["speed"] = {"generate_x_realtime_120bpm": generate_speed(mixed), "stream": stream_speed(mixed)}
    ours = mixture.get("test", test["nll"])
    minutes = max(meta["train_seconds"] for meta, _ in members) / 60
    result = {
        "test_nll": round(ours, 3), "baseline_test_nll": round(test["baseline_nll"], 3),
        "baseline_over_ours": round(test["baseline_nll"] / ours, 2),
        "valid_nll": round(mixture.get("valid", valid["nll"]), 3), "baseline_valid_nll": round(valid["baseline_nll"], 3),
        "test_steps": test["steps"], "train_minutes": round(minutes, 1), "train_steps": saved["step"],
        "batch_size": saved["train"]["batch_size"], "threads": args.threads, "device": args.device,
        "model": config["model"], "generate_x_realtime_120bpm": generate_speed(model),
        "stream_jsb_model": stream_speed(model),
    }
    if mixture:
        product = mixture["product"]
        result["members"] = args.members
        result["member_test_nll"] = mixture["members_test"]
        result["mixture_model"] = {
            "name": MIXTURE, "models_dir": str(args.models_dir) if args.models_dir else None,
            "eval_op_test_nll": product["test"], "mixture_frame_nll_test": mixture["test"],
            "difference": product["test"] - mixture["test"], "mix_op_valid_nll": product["valid"],
            "mixture_frame_nll_valid": mixture["valid"], **mixture["speed"]}
    shipped = BUILTIN_DIR / "music-default.safetensors"
    if shipped.is_file():
        meta, w = load_file(shipped)
        default = load(meta["config"], w, args.device)
        result["stream_default_model"] = stream_speed(default)
        result["generate_default_x_realtime_120bpm"] = generate_speed(default)
    print(json.dumps(result, indent=1))
    what = f"token-by-token mixture of {args.members} {args.arch} LSTMs" if mixture else f"{args.arch} LSTM"
    print(f"JSB quarter test NLL (nats/step, exact): {what} {result['test_nll']}, independent-Bernoulli LSTM "
          f"{result['baseline_test_nll']} (ratio {result['baseline_over_ours']}x) after {result['train_minutes']} "
          f"training minutes; streaming {result['stream_jsb_model']['x_realtime']}x real time at 120 BPM")
    if mixture:
        made = result["mixture_model"]
        print(f"the mixture as a product model ({MIXTURE}{', in ' + made['models_dir'] if made['models_dir'] else ''}"
              f"): eval op test NLL {made['eval_op_test_nll']:.6f}, mixture_frame_nll {made['mixture_frame_nll_test']:.6f}"
              f" (difference {made['difference']:.1e}); generation {made['generate_x_realtime_120bpm']}x, streaming "
              f"{made['stream']['x_realtime']}x real time at 120 BPM")


if __name__ == "__main__":
    main()
