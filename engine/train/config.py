"""Training settings, and building any config dataclass from a file plus `--set key=value`."""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    steps: int = 2000
    minutes: float = 0.0  # time budget; 0 means none
    batch_size: int = 16  # global: split across processes under torchrun
    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 2e-4
    momentum: float = 0.9  # sgd
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | linear (decay to 0 at `steps`)
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 means off
    checkpoint_every: int = 500
    eval_every: int = 0
    preview_every: int = 0
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {"optimizer": ("sgd", "adam", "adamw"), "schedule": ("constant", "cosine", "linear")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML file with optional sections "model" and "train"."""
    path = Path(path)
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    unknown = set(data) - {"model", "train"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; use 'model' and 'train'")
    return data


def parse_overrides(pairs: list[str], model_cls: type, train_cls: type = TrainConfig) -> dict[str, dict[str, str]]:
    """Sort `key=value` (or `model.key=value`, `train.key=value`) into the two sections."""
    sections: dict[str, dict[str, str]] = {"model": {}, "train": {}}
    fields = {"model": _field_names(model_cls), "train": _field_names(train_cls)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: write it as key=value")
        section, dot, bare = key.partition(".")
        if dot and section in sections:
            if bare not in fields[section]:
                raise ValueError(f"--set {key}: {section} settings are {sorted(fields[section])}")
            sections[section][bare] = value
            continue
        owners = [s for s in sections if key in fields[s]]
        if not owners:
            raise ValueError(f"--set {key}: not a setting; model settings are {sorted(fields['model'])}, "
                             f"training settings are {sorted(fields['train'])}")
        if len(owners) > 1:
            raise ValueError(f"--set {key}: both a model and a training setting; write model.{key} or train.{key}")
        sections[owners[0]][key] = value
    return sections


def build(cls: type, *layers: dict[str, Any]) -> Any:
    """Make `cls` from its defaults, then each layer of values in turn (strings are parsed by field type)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in hints:
                raise ValueError(f"{cls.__name__} has no setting {key!r}; it has {sorted(hints)}")
            values[key] = _coerce(key, hints[key], value) if isinstance(value, str) else value
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if isinstance(value, list) and key in fields:
            values[key] = tuple(value)
    return cls(**values)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _coerce(key: str, hint: Any, text: str) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # e.g. int | None
        if text.lower() == "none":
            return None
        hint = next(option for option in typing.get_args(hint) if option is not type(None))
    base = typing.get_origin(hint) or hint
    try:
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if base in (int, float):
            return base(text)
        if base in (tuple, list):
            item = (typing.get_args(hint) or (str,))[0]
            return tuple(_coerce(key, item, part.strip()) for part in text.split(",") if part.strip())
        if base is str or hint is typing.Any:
            return text
    except ValueError as e:
        raise ValueError(f"setting {key}: cannot read {text!r} as {getattr(base, '__name__', base)} ({e})") from None
    return text
