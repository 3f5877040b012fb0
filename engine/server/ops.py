"""Operations the engine answers, with their parameters checked before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from engine.server.jobs import JobFailed, Priority

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

    def describe(self) -> dict:
        spec = {"type": self.type, "required": self.required, "doc": self.doc}
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

    def check(self, params: Any) -> dict:
        """Return the params with defaults filled in, or raise JobFailed('bad_params', ...)."""
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
        return checked


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
