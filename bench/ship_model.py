"""Train, evaluate and ship the default model of one kind from its recipe, in one command.

    python bench/ship_model.py shape                # reads engine/recipes/shape.toml
    python bench/ship_model.py shape --threads 2 --report out/ship-shape
    python bench/ship_model.py texture --recipe engine/recipes/texture-ground.toml  # ships texture-ground

A recipe is a TOML file with four sections, all optional:
    [data]   the kind's training-data options (what `atelier train KIND` takes as flags)
    [model]  the kind's model config values
    [train]  shared trainer settings (steps, minutes, batch_size, lr, ...)
    [eval]   parameters of the kind's eval op (the one `atelier eval KIND` runs)

It trains with the shared trainer on an in-process engine (the same jobs as `atelier serve`)
into a temporary models folder, evaluates with the kind's eval op, and writes
engine/weights/NAME.safetensors: the trained weights, with the eval metrics, the recipe text
and this command in the metadata. NAME is the recipe file's stem (texture-ground.toml ships
texture-ground), except that the kind's own recipe (KIND.toml) ships KIND-default. A relative
[data] images path is read from the repository root. The eval op's files (e.g. a PNG sheet)
and the training run's loss curve go to --report.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTIONS = ("data", "model", "train", "eval")


def read_recipe(path: Path) -> dict[str, dict[str, Any]]:
    """The recipe's sections; unknown sections are an error (a typo would silently do nothing)."""
    if not path.exists():
        raise FileNotFoundError(f"no recipe at {path}; write one with sections {', '.join(SECTIONS)}")
    recipe = tomllib.loads(path.read_text())
    unknown = sorted(set(recipe) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; a recipe has {', '.join(SECTIONS)}")
    return {section: dict(recipe.get(section, {})) for section in SECTIONS}


def model_name(kind: str, recipe_path: Path) -> str:
    """The shipped model's name: the recipe's stem, or KIND-default for the kind's own recipe."""
    return f"{kind}-default" if recipe_path.stem == kind else recipe_path.stem


def trained_on(metadata: dict[str, Any]) -> list[str]:
    """The images a shipped model was trained on, in this checkout: `_rooted` stored the paths of
    the machine that trained it, and a path under bench/data/ is found here too."""
    from engine.texture.ops import found_here

    return [found_here(entry["path"].removeprefix("skimage:")) for entry in metadata["data"]["images"]]


def _rooted(data: dict[str, Any]) -> dict[str, Any]:
    """[data] (or [eval]) with a relative images or meshes path that exists under the repository root
    made absolute (a demo name such as "gravel" is left alone). `meshes_split = "train"` (or "held_out")
    stands for the files that the meshes folder's split.json lists under that name: a folder of links
    to them (out/ship-data/SPLIT, a fixed path, so the voxel cache is reused) replaces the folder."""
    data = dict(data)
    for key in ("images", "meshes"):
        value = data.get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and (ROOT / value).exists():
            data[key] = str(ROOT / value)
    split = data.pop("meshes_split", None)
    if split:
        import json

        folder = Path(data["meshes"])
        names = json.loads((folder / "split.json").read_text())[split]
        linked = ROOT / "out" / "ship-data" / split
        shutil.rmtree(linked, ignore_errors=True)
        linked.mkdir(parents=True)
        for name in names:
            (linked / name).symlink_to(folder / name)
        data["meshes"] = str(linked)
    return data


def _printer(label: str, every: float = 20.0):
    last = [0.0]

    def progress(fraction: float, message: str, preview: Any = None) -> None:
        now = time.monotonic()
        if now - last[0] >= every or fraction >= 1.0:
            last[0] = now
            print(f"[{time.strftime('%H:%M:%S')}] {label} {fraction:6.1%} {message}", flush=True)

    return progress


def _plain(value: Any) -> Any:
    """The JSON-able part of an eval value (numbers, strings, nested dicts/lists), for metadata."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if _plain(v) is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return None  # arrays (pictures, meshes) go to files, not metadata


def run_eval(session, kind: str, name: str, params: dict[str, Any], report: Path) -> dict[str, Any]:
    """The kind's eval op on model `name`: its files written into `report`, its value as plain
    data ({} for a kind without an eval op). [eval] made of sub-tables ([eval.collection],
    [eval.procedural]) runs the op once per table: the first table's metrics as they are, the
    others' prefixed with the table's name (procedural_iou)."""
    from engine.kinds import kind_module

    module = kind_module(kind)
    eval_op = module.CLI_OPS.get("eval")
    if not eval_op:
        return {}
    tables = {k: v for k, v in params.items() if isinstance(v, dict)}
    if tables:
        merged: dict[str, Any] = {"metrics": {}}
        for i, (table, sub) in enumerate(tables.items()):
            value = run_eval(session, kind, name, sub, report / table)
            prefix = "" if i == 0 else f"{table}_"
            merged["metrics"].update({prefix + k: v for k, v in value.pop("metrics", {}).items()})
            merged[table] = value
        return merged
    value = session.call(eval_op, {"model": name, **_rooted(params)}, progress=_printer("eval"))
    report.mkdir(parents=True, exist_ok=True)
    for path in module.write_output(eval_op, value, report / f"{name}-eval.png"):
        print(f"wrote {path}")
    return _plain(value)


def ship(kind: str, recipe_path: Path, out: Path, report: Path, device: str) -> dict[str, Any]:
    from engine.cli.session import LocalSession
    from engine.kinds import kind_module
    from engine.store.checkpoints import load_file, save_file

    module = kind_module(kind)
    recipe = read_recipe(recipe_path)
    name = model_name(kind, recipe_path)
    eval_op = module.CLI_OPS.get("eval")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"atelier-ship-{kind}-") as tmp:
        session = LocalSession(Path(tmp), device)
        try:
            trained = session.call("train", {"kind": kind, "name": name, "data": _rooted(recipe["data"]),
                                             "model": recipe["model"], "train": recipe["train"]},
                                   progress=_printer("train"))
            train_minutes = (time.monotonic() - started) / 60
            print(f"trained {name}: step {trained['step']} in {train_minutes:.1f} min", flush=True)
            evaluation = run_eval(session, kind, name, recipe["eval"], report)
        finally:
            session.close()
        run_dir = Path(tmp) / f"{name}.run"
        if (run_dir / "loss.png").exists():
            report.mkdir(parents=True, exist_ok=True)
            shutil.copy(run_dir / "loss.png", report / f"{name}-loss.png")
        metadata, tensors = load_file(Path(tmp) / f"{name}.safetensors")
    metrics = evaluation.get("metrics", {})
    metadata.update({
        "name": name,
        "train_metrics": metadata.get("metrics", {}),
        "metrics": metrics or metadata.get("metrics", {}),
        "eval": {"op": eval_op, "params": recipe["eval"], **{k: v for k, v in evaluation.items() if k != "metrics"}},
        "recipe": recipe_path.read_text(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "ship_minutes": round((time.monotonic() - started) / 60, 2),
    })
    stored = save_file(out, tensors, metadata)
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({size:.2f} MB, hash {stored['content_hash'][:12]})")
    for key, val in metrics.items():
        print(f"  {key:>14} {val:.4g}" if isinstance(val, float) else f"  {key:>14} {val}")
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", help="model kind, e.g. shape, texture, music")
    parser.add_argument("--recipe", type=Path, help="recipe file (default engine/recipes/KIND.toml)")
    parser.add_argument("--out", type=Path, help="weights file (default engine/weights/NAME.safetensors, NAME the "
                        "recipe's stem, KIND-default for KIND.toml)")
    parser.add_argument("--report", type=Path, help="folder for the eval sheet and loss curve (default out/ship-NAME)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = args.recipe or ROOT / "engine" / "recipes" / f"{args.kind}.toml"
    name = model_name(args.kind, recipe)
    ship(args.kind, recipe, args.out or ROOT / "engine" / "weights" / f"{name}.safetensors",
         args.report or Path("out") / f"ship-{name.removesuffix('-default')}", args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
