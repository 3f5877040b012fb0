"""The model kinds the engine serves, by name; each kind's ops module is imported when first used.

A kind's ops module (`engine/<kind>/ops.py`) provides:
- `config_class()`: the model config dataclass (stored with every checkpoint);
- `DATA_PARAMS`: dict[str, Param], the training-data options of the `train` op;
- `objective(config, data: dict, device) -> Objective`: what the shared trainer trains;
- `load(config: dict, weights: dict[str, Tensor], device)`: an inference model from a checkpoint;
- `TRAIN_DEFAULTS` (optional): trainer settings that suit the kind (e.g. Adam betas for a GAN);
- `OPS`: list[Op], the kind's generation and evaluation ops (e.g. "texture.generate");
- `CLI_OPS`: which op `atelier generate` and `atelier eval` run;
- `write_output(op, value, out)`: the files a CLI user gets from an op's result;
- `demo(client, model, out)`: what `atelier demo` makes with a shipped model;
- optional, for the CLI: `DATA_SOURCES` (mutually exclusive data options: one given on the
  command line replaces a config file's), `describe_data(summary)` (what training read and
  skipped, in words), `describe_result(op, value, written)` (a result in words without --json).

An ops module stays light to import (the engine imports all of them at start, the CLI builds
its flags from them): torch and the heavy libraries load inside its functions.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

KIND_MODULES: dict[str, str] = {
    "shape": "engine.shape.ops",
    "texture": "engine.texture.ops",
    "music": "engine.music.ops",
}


# The model used when none is named (CLI generate/eval, the demo, the add-on's empty Model field),
# where it is not `<kind>-default`: colour PBR materials replaced the grey gravel as the texture
# default, and planks is the one of them that reads as its material at 1:1 (docs/BENCHMARKS.md,
# shipped materials); texture-default stays loadable by name.
DEFAULT_MODELS: dict[str, str] = {"texture": "texture-planks"}
_SHIPPED = Path(__file__).resolve().parent / "weights"


def default_model(kind: str) -> str:
    """The shipped model a kind uses when none is named (`<kind>-default` where its preferred one
    is not installed)."""
    preferred = DEFAULT_MODELS.get(kind)
    if preferred and (_SHIPPED / f"{preferred}.safetensors").exists():
        return preferred
    return f"{kind}-default"


def kind_module(kind: str) -> ModuleType:
    if kind not in KIND_MODULES:
        raise KeyError(f"unknown model kind {kind!r}; this engine knows: {', '.join(KIND_MODULES)}")
    return importlib.import_module(KIND_MODULES[kind])
