"""Controls on MIDI CCs: temperature, density and key turn the music; mute, regenerate and
respond are switches. Any CC can be bound with learn mode (`--learn CONTROL ...`), and the
binding is kept in a small JSON file for the next run.

Value ranges (CC value 0-127):
- temperature: 0.1 .. 2.0, linear (about 1.0 at 60)
- density: 0.25 .. 4, exponential (1.0 at 64). The engine's density scales the chance of
  starting new notes: with the shipped model about 5, 17 and 28 notes per bar at 0.25, 1
  and 4 (the whole engine range, 0.05 .. 20, stays with --density)
- key: 25 zones: lowest = no key lock, then C .. B major, then C .. B minor
- mute: on at 64 and above; regenerate, respond: fire when the value rises through 64
"""
from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import paths

CONTINUOUS = ("temperature", "density", "key")
SWITCHES = ("mute", "regenerate", "respond")
CONTROLS = CONTINUOUS + SWITCHES
DEFAULT_CCS = {"temperature": 20, "density": 21, "key": 22, "mute": 23, "regenerate": 24, "respond": 25}
TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def default_map_file() -> Path:
    return paths.state_dir() / "midi-controls.json"


def temperature(value: int) -> float:
    return round(0.1 + 1.9 * value / 127, 3)


DENSITY_RANGE = (0.25, 4.0)


def density(value: int) -> float:
    low, high = DENSITY_RANGE
    return round(low * (high / low) ** (value / 127), 3)


def key(value: int) -> str:
    """'' (no key lock), or a major or minor key."""
    zone = value * 25 // 128
    if zone == 0:
        return ""
    return f"{TONICS[(zone - 1) % 12]} {'major' if zone <= 12 else 'minor'}"


@dataclass
class ControlMap:
    ccs: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CCS))
    _last: dict[int, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> "ControlMap":
        """The saved bindings (defaults for controls never learned)."""
        ccs = dict(DEFAULT_CCS)
        if path and path.exists():
            try:
                saved = json.loads(path.read_text())
            except ValueError as e:
                raise ValueError(f"{path} is not valid JSON ({e}); fix or delete it to use the default CCs") from None
            ccs.update({k: int(v) for k, v in saved.items() if k in CONTROLS})
        return cls(ccs)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.ccs, indent=2) + "\n")

    def bind(self, control: str, cc: int) -> None:
        if control not in CONTROLS:
            raise ValueError(f"unknown control {control!r}; choose from {', '.join(CONTROLS)}")
        if not 0 <= cc <= 119:
            raise ValueError(f"CC {cc} is not a control CC (use 0-119; 120-127 are channel mode messages)")
        self.ccs = {k: v for k, v in self.ccs.items() if v != cc}  # one control per CC
        self.ccs[control] = cc

    def interpret(self, cc: int, value: int) -> tuple[str, Any] | None:
        """What a CC means: ('temperature', 0.8), ('mute', True), ('regenerate', None), ... or None."""
        previous = self._last.get(cc, 0)
        self._last[cc] = value
        for control, bound in self.ccs.items():
            if bound != cc:
                continue
            if control == "temperature":
                return control, temperature(value)
            if control == "density":
                return control, density(value)
            if control == "key":
                return control, key(value)
            if control == "mute":
                return control, value >= 64
            if value >= 64 > previous:  # regenerate, respond: on the rising edge
                return control, None
        return None


def learn(messages: "queue.Queue[list[int]]", controls: list[str], control_map: ControlMap, timeout: float = 60.0,
          say=print) -> ControlMap:
    """Bind each control in turn to the next CC that moves on the input (not one just learned:
    a knob keeps sending while it turns)."""
    learned: set[int] = set()
    for control in controls:
        if control not in CONTROLS:
            raise ValueError(f"unknown control {control!r}; choose from {', '.join(CONTROLS)}")
        say(f"learn: move the knob, fader or button for {control!r} ...")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no CC arrived within {timeout:g} s for {control!r}; check that the controller "
                                   "sends to the --input port")
            try:
                message = messages.get(timeout=left)
            except queue.Empty:
                continue
            if len(message) == 3 and message[0] & 0xF0 == 0xB0 and message[1] < 120 and message[1] not in learned:
                learned.add(message[1])
                control_map.bind(control, message[1])
                say(f"learn: {control} = CC {message[1]}")
                break
    return control_map
