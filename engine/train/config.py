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


SECTIONS = ("model", "train", "data", "eval")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML file with optional sections "model", "train", "data" (training data
    options) and "eval" (evaluation options; engine/recipes/ uses all four)."""
    path = Path(path)
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; use {', '.join(SECTIONS)}")
    return data


def parse_overrides(pairs: list[str], model_cls: type, train_cls: type = TrainConfig) -> dict[str, dict[str, Any]]:
    """Sort `key=value` pairs into nested "model" and "train" sections.

    A key names a setting of the model config or the trainer (`lr=1e-3`, `channels=64`), a
    nested model setting (`model.d_hidden=256` when the config has a `model` part), or is
    made explicit with a `model.` or `train.` prefix.
    """
    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    classes = {"model": model_cls, "train": train_cls}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: write it as key=value")
        path = key.split(".")
        owners = [(s, path) for s in sections if _has_path(classes[s], path)]
        if not owners and path[0] in sections and _has_path(classes[path[0]], path[1:]):
            owners = [(path[0], path[1:])]
        if not owners:
            raise ValueError(f"--set {key}: not a setting; model settings are {_paths(model_cls)}, "
                             f"training settings are {_paths(train_cls)}")
        if len(owners) > 1:
            raise ValueError(f"--set {key}: both a model and a training setting; write model.{key} or train.{key}")
        section, path = owners[0]
        target = sections[section]
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return sections


def build(cls: type, *layers: dict[str, Any]) -> Any:
    """Make dataclass `cls` from its defaults, then each layer of values in turn.

    Strings are parsed by the field's type; a dict for a dataclass field builds that part.
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in hints:
                raise ValueError(f"{cls.__name__} has no setting {key!r}; it has {sorted(hints)}")
            part = _dataclass_of(hints[key])
            if part is not None and isinstance(value, dict):
                previous = values.get(key)
                base = dataclasses.asdict(previous) if dataclasses.is_dataclass(previous) else {}
                values[key] = build(part, base, value)
            elif isinstance(value, str):
                values[key] = _coerce(key, hints[key], value)
            else:
                values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _dataclass_of(hint: Any) -> type | None:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return next((o for o in options if dataclasses.is_dataclass(o)), None)


def _has_path(cls: type, path: list[str]) -> bool:
    if not path:
        return False
    hints = typing.get_type_hints(cls)
    if path[0] not in hints:
        return False
    if len(path) == 1:
        return True
    part = _dataclass_of(hints[path[0]])
    return part is not None and _has_path(part, path[1:])


def _paths(cls: type, prefix: str = "") -> list[str]:
    names = []
    for name, hint in typing.get_type_hints(cls).items():
        part = _dataclass_of(hint)
        names += _paths(part, f"{prefix}{name}.") if part else [prefix + name]
    return names


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
