"""Any config dataclass from its defaults plus layers of values: a file's sections, a
checkpoint's stored dict, `--set key=value` overrides. One way for every kind, with an error
that names the unknown key and the known ones.

    build(TextureGANConfig, stored_dict)       # a checkpoint's config
    build(MusicConfig, {"model": {"d_hidden": 256}}, {"seq_steps": "128"})
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

SECTIONS = ("model", "train", "data", "eval")

# Bounds (inclusive) on the settings that size a model, by config class: `build` checks them
# before any model is made, so a crafted checkpoint or request cannot make the engine allocate
# gigabytes. Far above every recipe; at these bounds the largest model has about 250 M parameters.
LIMITS: dict[str, dict[str, tuple[int, int]]] = {
    "ShapeVAEConfig": {"resolution": (8, 128), "latent_dim": (1, 1024), "width": (1, 64)},
    "TextureGANConfig": {"channels": (1, 4), "n_local": (0, 256), "n_global": (0, 256), "n_periodic": (0, 64), "n_scale_noise": (0, 16),
                         "g_blocks": (1, 8), "g_width": (1, 512), "g_max_width": (1, 512), "crop": (8, 1024),
                         "d_layers": (1, 8), "d_width": (1, 512), "d_max_width": (1, 512), "n_exemplars": (0, 4096)},
    "MusicConfig": {"steps_per_quarter": (1, 96), "seq_steps": (1, 16384), "transpose": (0, 24)},
    "MusicRNNConfig": {"n_keys": (1, 128), "n_layers": (1, 8), "d_embed": (1, 1024), "d_hidden": (1, 2048),
                       "bar_steps": (0, 256), "d_decoder": (1, 2048), "decoder_layers": (0, 16)},
    "MusicBaselineConfig": {"n_keys": (1, 128), "n_layers": (1, 8), "d_hidden": (1, 2048)},
}


class ConfigOutOfBounds(ValueError):
    """A setting outside its bounds in LIMITS; `too_large` when above them."""

    def __init__(self, message: str, too_large: bool):
        super().__init__(message)
        self.too_large = too_large


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


def parse_overrides(pairs: list[str], model_cls: type, train_cls: type) -> dict[str, dict[str, Any]]:
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

    Strings are parsed by the field's type; a dict for a dataclass field builds that part, and
    for an optional part (`baseline: BaselineConfig | None`) true builds its defaults, false None.
    A value outside the class's LIMITS raises ConfigOutOfBounds before the dataclass is made.
    A setting in the class's REMOVED ({name: (value, what it was)}) is dropped at the value with
    which the class is the same without it (stored models and runs keep loading and resuming);
    any other value is refused: what it asked for no longer exists.
    """
    hints = typing.get_type_hints(cls)
    removed = getattr(cls, "REMOVED", {})
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in removed:
                same, what = removed[key]
                if value != same:
                    raise ValueError(f"{key}={str(value).lower()}: {what} was removed from the engine; train it "
                                     "again without it")
                continue
            if key not in hints:
                raise ValueError(f"{cls.__name__} has no setting {key!r}; it has {sorted(hints)}")
            part = _dataclass_of(hints[key])
            if part is not None and isinstance(value, bool):
                values[key] = part() if value else None
            elif part is not None and isinstance(value, dict):
                previous = values.get(key)
                base = dataclasses.asdict(previous) if dataclasses.is_dataclass(previous) else {}
                values[key] = build(part, base, value)
            elif isinstance(value, str):
                values[key] = _coerce(key, hints[key], value)
            else:
                values[key] = tuple(value) if isinstance(value, list) and _is_tuple(hints[key]) else value
    _check_limits(cls, values)
    return cls(**values)


def _check_limits(cls: type, values: dict[str, Any]) -> None:
    for key, (low, high) in LIMITS.get(cls.__name__, {}).items():
        value = values.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
            raise ConfigOutOfBounds(f"{cls.__name__}: setting {key} = {value} is outside its bounds {low}..{high}; "
                                    "choose a value within them", too_large=value > high)


def _is_tuple(hint: Any) -> bool:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any((typing.get_origin(o) or o) is tuple for o in options)


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
