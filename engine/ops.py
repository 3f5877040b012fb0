"""The op vocabulary the server and every model kind share: what an op is, its parameters
(checked before any work starts), its priority, and how it fails or is cancelled.

A kind declares its ops here as data; the server runs them, the CLI builds its flags from
them, and the MIDI bridge and the Blender add-on read their ranges from them. This module
imports nothing else of the engine, so both sides can import it.
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np


class Priority(enum.IntEnum):
    LIVE = 0
    INTERACTIVE = 1
    TRAINING = 2


class Cancelled(Exception):
    """Raised by `Context.check()` once the op is cancelled; long work lets it propagate."""


class JobFailed(Exception):
    """A failure whose message is meant for the user; `code` is a protocol error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Context(Protocol):
    """What a running op sees (the server's JobContext is one)."""

    @property
    def cancelled(self) -> bool: ...

    def check(self) -> None:
        """Raise Cancelled once the op is cancelled. Long work calls it between units of work."""

    def progress(self, fraction: float, message: str = "", preview: Any = None) -> None:
        """Report progress (0..1); also checks for cancellation."""


_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict, "list": list,
          "array": np.ndarray}


@dataclass(frozen=True)
class Param:
    type: str  # int | float | str | bool | dict | list | array | any
    default: Any = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    doc: str = ""
    path: bool = False  # a file or folder the op reads: the engine decides which it may (PathCheck)
    names: tuple[str, ...] = ()  # words a path param takes instead of a path (e.g. demo exemplars)

    def describe(self) -> dict:
        spec = {"type": self.type, "required": self.required, "doc": self.doc}
        if self.path:
            spec["path"] = True
        if not self.required and not isinstance(self.default, np.ndarray):
            spec["default"] = self.default
        for key in ("min", "max", "choices"):
            if getattr(self, key) is not None:
                spec[key] = list(getattr(self, key)) if key == "choices" else getattr(self, key)
        return spec


@dataclass(frozen=True)
class Op:
    name: str
    run: Callable[..., Any]  # run(engine, context, **params) -> JSON-able value (arrays allowed)
    params: dict[str, Param] = field(default_factory=dict)
    priority: Priority = Priority.INTERACTIVE
    inline: bool = False  # answered on the I/O loop at once; must be quick
    doc: str = ""

    def describe(self) -> dict:
        return {"doc": self.doc, "priority": self.priority.name.lower(),
                "params": {name: p.describe() for name, p in self.params.items()}}

    def check(self, params: Any, paths: PathCheck | None = None) -> dict:
        """Return the params with defaults filled in, or raise JobFailed('bad_params', ...).

        `paths`, when given, vets every path param (see PathCheck); without it paths pass as given.
        """
        if not isinstance(params, dict):
            raise JobFailed("bad_params", f"{self.name}: 'params' must be an object")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise JobFailed("bad_params", f"{self.name}: unknown parameter {unknown[0]!r}; "
                            f"it takes {sorted(self.params) or 'no parameters'}")
        checked = {}
        for name, spec in self.params.items():
            if name not in params or params[name] is None:
                if spec.required:
                    raise JobFailed("bad_params", f"{self.name}: parameter {name!r} is required ({spec.doc})")
                checked[name] = spec.default
                continue
            checked[name] = _check_value(self.name, name, spec, params[name])
            if spec.path and paths is not None:
                checked[name] = vet_path(self.name, name, spec, checked[name], paths)
        return checked


PathCheck = Callable[[str], str]
"""A path a request names -> the path to read; raises JobFailed('path_not_allowed', ...) without
saying what the folder holds or whether the path exists."""


def vet_path(op: str, name: str, spec: Param, value: str, paths: PathCheck) -> str:
    if value in spec.names and not os.path.lexists(value):
        return value
    try:
        return paths(value)
    except JobFailed as e:
        raise JobFailed(e.code, f"{op}: {name!r}: {e.message}") from None


def _check_value(op: str, name: str, spec: Param, value: Any) -> Any:
    expected = _TYPES.get(spec.type)
    is_bool = isinstance(value, bool)
    if expected is not None and (not isinstance(value, expected) or (is_bool and spec.type != "bool")):
        raise JobFailed("bad_params", f"{op}: {name!r} must be of type {spec.type}, got {type(value).__name__} {_show(value)}")
    if spec.type == "float":
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        raise JobFailed("bad_params", f"{op}: {name!r} must be one of {list(spec.choices)}, got {_show(value)}")
    if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
        raise JobFailed("bad_params", f"{op}: {name!r} must be between {spec.min} and {spec.max}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, np.ndarray) else f"array{value.shape}"
    return text if len(text) <= 40 else text[:37] + "..."


MODEL = Param("str", required=True, doc="name of a trained model (models.list)")


def provenance(metadata: dict, op: str, params: dict[str, Any]) -> dict[str, Any]:
    """Enough to make the same result again: model, its content hash, the op and its parameters."""
    plain = {k: v for k, v in params.items() if not isinstance(v, np.ndarray) and k != "model"}
    return {"model": metadata.get("name"), "model_hash": metadata.get("content_hash"), "kind": metadata.get("kind"),
            "op": op, "params": plain}
