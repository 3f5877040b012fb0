"""MIDI ports through python-rtmidi: choose the MIDI system, open ports by exact name.

An output is either a new virtual port (default name "Atelier") or an existing port given
by its exact name. A name that matches no port is an error listing the ports there are --
never a silently created port with the mistyped name. On ALSA, listed names end in the
client:port numbers ("Synth:Synth MIDI 1 128:0"); the name without them also matches.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import rtmidi

APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK, "coremidi": rtmidi.API_MACOSX_CORE,
        "winmm": rtmidi.API_WINDOWS_MM}
CLIENT_NAME = "Atelier"
DEFAULT_PORT_NAME = "Atelier"
_ALSA_NUMBERS = re.compile(r" \d+:\d+$")


class PortError(Exception):
    """A port or MIDI system problem, with a message that says what to do."""


@dataclass
class Opened:
    port: rtmidi.MidiOut | rtmidi.MidiIn
    name: str      # as listed (or the virtual port's name)
    api: str
    virtual: bool

    def send(self, message: list[int]) -> None:
        self.port.send_message(message)

    def flush(self, timeout: float) -> bool:
        """Wait until what was sent has left. rtmidi cannot tell when that is: wait `timeout`
        seconds (many JACK periods, ample for ALSA) and return False, "not confirmed"."""
        time.sleep(timeout)
        return False

    def close(self) -> None:
        self.port.close_port()
        self.port.delete()


def default_apis() -> list[str]:
    """The MIDI systems to try, in order, on this platform (only those compiled in)."""
    if sys.platform == "darwin":
        order = ["coremidi", "jack"]
    elif sys.platform.startswith("win"):
        order = ["winmm"]
    else:
        order = ["alsa", "jack"]
    compiled = set(rtmidi.get_compiled_api())
    return [name for name in order if APIS[name] in compiled]


def _instance(kind: type, api: str | None) -> tuple[rtmidi.MidiOut | rtmidi.MidiIn, str]:
    """A MidiOut/MidiIn on the given system, or on the first of the platform's systems that works."""
    names = [api] if api else default_apis()
    if api and APIS[api] not in rtmidi.get_compiled_api():
        raise PortError(f"this python-rtmidi was built without {api}; use one of: "
                        f"{', '.join(n for n, a in APIS.items() if a in rtmidi.get_compiled_api())}")
    errors = []
    for name in names:
        try:
            return kind(APIS[name], name=CLIENT_NAME), name
        except rtmidi.RtMidiError as e:
            errors.append(f"{name}: {e}")
    hint = ("start a JACK server (or PipeWire's JACK) or load the ALSA sequencer (snd-seq)"
            if sys.platform.startswith("linux") else "check that the MIDI system is running")
    raise PortError(f"cannot open a MIDI system ({'; '.join(errors) or 'none compiled in'}); {hint}, "
                    f"or choose one with --api ({', '.join(APIS)})")


def find_port(listed: list[str], name: str, direction: str, api: str) -> int:
    """The index of the port called exactly `name`; a PortError listing the ports otherwise."""
    exact = [i for i, p in enumerate(listed) if p == name]
    if not exact:
        exact = [i for i, p in enumerate(listed) if _ALSA_NUMBERS.sub("", p) == name]
    if len(exact) == 1:
        return exact[0]
    shown = "\n".join(f"  {p}" for p in listed) or "  (none)"
    if exact:
        raise PortError(f"{len(exact)} {direction} ports on {api} are called {name!r}; give the full listed name:\n"
                        f"{shown}")
    raise PortError(f"no {direction} port called {name!r} on {api} (names must match exactly; "
                    f"see --list-ports). {direction.capitalize()} ports there are:\n{shown}")


def open_output(port_name: str | None, api: str | None = None, virtual_name: str = DEFAULT_PORT_NAME) -> Opened:
    """An existing output port by exact name, or (port_name None) a new virtual port."""
    out, used = _instance(rtmidi.MidiOut, api)
    if port_name is None:
        if used == "winmm":
            raise PortError("Windows cannot create virtual MIDI ports: install loopMIDI, create a port there "
                            "(e.g. 'Atelier') and pass its name with --port (see docs/MIDI_BRIDGE.md)")
        out.open_virtual_port(virtual_name)
        return Opened(out, virtual_name, used, True)
    out.open_port(find_port(out.get_ports(), port_name, "output", used), "out")
    return Opened(out, port_name, used, False)


def open_input(port_name: str | None, api: str | None = None, virtual_name: str = DEFAULT_PORT_NAME + " in"
               ) -> Opened:
    """An existing input port by exact name, or (port_name None) a new virtual input port.

    Clock and other realtime messages are let through (rtmidi ignores them by default)."""
    inp, used = _instance(rtmidi.MidiIn, api)
    inp.ignore_types(sysex=True, timing=False, active_sense=True)
    if port_name is None:
        if used == "winmm":
            raise PortError("Windows cannot create virtual MIDI ports: create one in loopMIDI and pass its "
                            "name with --input")
        inp.open_virtual_port(virtual_name)
        return Opened(inp, virtual_name, used, True)
    inp.open_port(find_port(inp.get_ports(), port_name, "input", used), "in")
    return Opened(inp, port_name, used, False)


def list_ports(api: str | None = None) -> tuple[str, list[str], list[str]]:
    """(system used, output port names, input port names)."""
    out, used = _instance(rtmidi.MidiOut, api)
    inp = rtmidi.MidiIn(APIS[used], name=CLIENT_NAME)
    try:
        return used, out.get_ports(), inp.get_ports()
    finally:
        out.delete()
        inp.delete()
