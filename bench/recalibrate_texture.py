"""Measure a trained texture model's calibration again with the current code, and re-evaluate it.

    python bench/recalibrate_texture.py               # engine/weights/texture-default.safetensors, in place
    python bench/recalibrate_texture.py --weights W --report out/recalibrate-texture
    python bench/recalibrate_texture.py --weights W --lattice-only   # add the lattice filter, keep the rest
    python bench/recalibrate_texture.py --weights W --metrics-only   # the stored figures by today's measure

The calibration (engine/texture/calibration.py) and the kept global codes
(engine/texture/screening.py) are measured from the trained generator and the exemplar when
training ends; it is what `atelier train texture` would have stored had
the code been this version. The generator's weights are not touched. With --lattice-only the
stored calibration and codes are kept and only the lattice filter (engine/texture/lattice.py) is
measured under them, so that the pictures change by that alone; with --metrics-only the model is
kept as it is and only its figures are measured again (after the measure changed). The metrics in the
metadata are replaced by a fresh run of the eval op (as bench/ship_model.py runs it), and
`recalibrated` records the command and the time.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ship_model import run_eval, trained_on  # noqa: E402  (this folder is on the path when run as a script)


def recalibrate(weights: Path, report: Path, lattice_only: bool = False, metrics_only: bool = False) -> dict:
    from engine.cli.session import LocalSession
    from engine.store.checkpoints import load_file, save_file
    from engine.texture.calibration import measure, measure_lattice
    from engine.texture.generation import TextureModel, load
    from engine.texture.objective import resolve_images
    from engine.texture.screening import screen

    metadata, tensors = load_file(weights)
    model = load(metadata["config"], tensors)
    sources = trained_on(metadata)
    if model.config.maps:  # a material's maps: their folder, stacked as training stacked them
        sources = [str(Path(sources[0]).parent)]
    images = [image for source in sources for image in resolve_images(source, model.channels, model.config.crop,
                                                                           model.config.exemplar_shrink)[0]]
    if metrics_only:
        config = model.config
    elif lattice_only:
        config = dataclasses.replace(model.config, lattice_filter=measure_lattice(model.G, model.config))
    else:
        calibrated = TextureModel(dataclasses.replace(model.config, **measure(model.G, images), global_codes=None),
                                  model.G)
        config = dataclasses.replace(calibrated.config, global_codes=screen(calibrated, images))
    metadata["config"] = dataclasses.asdict(config)
    name, eval_params = metadata["name"], metadata.get("eval", {}).get("params", {})  # {}: the op's defaults
    with tempfile.TemporaryDirectory(prefix="atelier-recalibrate-") as tmp:
        save_file(Path(tmp) / f"{name}.safetensors", tensors, metadata)
        session = LocalSession(Path(tmp), "cpu")
        try:
            # the images found here: the stored paths are those of the machine that trained it
            found = {"images": sources[0]} if len(sources) == 1 else {}
            evaluation = run_eval(session, "texture", name, {**found, **eval_params}, report)
        finally:
            session.close()
    metadata["metrics"] = evaluation.pop("metrics")
    metadata["eval"] = {"op": "texture.eval", "params": eval_params, **evaluation}
    metadata["recalibrated"] = {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
                                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    stored = save_file(weights, tensors, metadata)
    print(f"wrote {weights}")
    for key, val in metadata["metrics"].items():
        print(f"  {key:>14} {val:.4g}")
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "engine" / "weights" / "texture-default.safetensors")
    parser.add_argument("--report", type=Path, default=Path("out") / "recalibrate-texture")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lattice-only", action="store_true",
                        help="keep the stored calibration and codes; measure only the lattice filter under them")
    parser.add_argument("--metrics-only", action="store_true",
                        help="keep the model as it is; measure only its stored figures again")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    recalibrate(args.weights, args.report, args.lattice_only, args.metrics_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
