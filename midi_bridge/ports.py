"""MIDI ports through python-rtmidi: choose the MIDI system, open ports by exact name.

An output is either a new virtual port or an existing port given by its exact name. A
name that matches no port is an error listing the ports there are -- never a silently
created port with the mistyped name. On ALSA, listed names end in the client:port numbers
("Synth:Synth MIDI 1 128:0"); the name without them also matches.

Names as they are, on JACK: the bridge is a client named after `--virtual-name` ("Atelier")
with an output port `out` -- "Atelier:out" -- and, for an input, a client "Atelier in" with
a port `in` -- "Atelier in:in". A second bridge on the same server takes "Atelier 2:out" and
"Atelier 2 in:in", and so on: the client opens under that name, so what the bridge prints is
what JACK shows. Where a JACK server runs, the output and input are the native
ones (midi_bridge.jack_out: each message at its exact frame; midi_bridge.jack_in: each
message timed at its frame); `--api rtmidi-jack` goes through rtmidi instead, a period late,
for comparison. On ALSA the virtual ports are "Atelier:Atelier" and "Atelier:Atelier
in" (ALSA tells clients of the same name apart by number); on CoreMIDI, "Atelier" and "Atelier in".

What ALSA and libjack print while a system is tried is held back (midi_bridge.quiet) and
quoted in the error if opening fails.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import rtmidi

from midi_bridge.quiet import held_stderr, last_lines

if TYPE_CHECKING:
    from midi_bridge.jack_in import JackInput

APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK, "coremidi": rtmidi.API_MACOSX_CORE,
        "winmm": rtmidi.API_WINDOWS_MM, "rtmidi-jack": rtmidi.API_UNIX_JACK}
JACKS = ("jack", "rtmidi-jack")  # "jack": the native output (midi_bridge.jack_out); "rtmidi-jack": JACK through rtmidi
CLIENT_NAME = "Atelier"
DEFAULT_PORT_NAME = "Atelier"
JACK_OUT, JACK_IN = "out", "in"  # port names on JACK; the client carries the bridge's name
_jack_names: dict[str, str] = {}  # --virtual-name -> the client name this process took on JACK
_ALSA_NUMBERS = re.compile(r" \d+:\d+$")


class PortError(Exception):
    """A port or MIDI system problem, with a message that says what to do."""


@dataclass
class Opened:
    port: rtmidi.MidiOut | rtmidi.MidiIn
    name: str      # as listed (or the virtual port's name)
    api: str
    virtual: bool

    lead = 0.0  # rtmidi sends at once: the scheduler hands each message over when it is due

    def send(self, message: list[int], due: float | None = None) -> None:
        self.port.send_message(message)

    def listen(self, listener: Callable[[list[int], float], None] | None) -> None:
        """An input: call `listener(message, time it was read)` for each message (None: stop)."""
        if listener is None:
            self.port.cancel_callback()
        else:
            self.port.set_callback(lambda event, _: listener(list(event[0]), time.monotonic()))

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


def _instance(kind: type, api: str | None, jack_client: Callable[[], str] | None = None
              ) -> tuple[rtmidi.MidiOut | rtmidi.MidiIn, str]:
    """A MidiOut/MidiIn on the given system, or on the first of the platform's systems that works.
    The client is called CLIENT_NAME, on JACK `jack_client()` (asked only when JACK is tried)."""
    names = [api] if api else default_apis()
    if api and APIS[api] not in rtmidi.get_compiled_api():
        raise PortError(f"this python-rtmidi was built without {api}; use one of: "
                        f"{', '.join(n for n, a in APIS.items() if a in rtmidi.get_compiled_api())}")
    errors = []
    for name in names:
        with held_stderr() as said:
            try:
                client = jack_client() if jack_client and name in JACKS else CLIENT_NAME
                return kind(APIS[name], name=client), name
            except rtmidi.RtMidiError as e:
                failed = f"{name}: {e}"
        library = last_lines(said[0])
        errors.append(f"{failed} ({library})" if library else failed)
    hint = ("start a JACK server (or PipeWire's JACK) or load the ALSA sequencer (snd-seq)"
            if sys.platform.startswith("linux") else "check that the MIDI system is running")
    raise PortError(f"cannot open a MIDI system ({'; '.join(errors) or 'none compiled in'}); {hint}, "
                    f"or choose one with --api ({', '.join(APIS)})")


def _jack_clients() -> set[str]:
    """The names of the JACK clients that have MIDI ports now."""
    names: set[str] = set()
    for kind in (rtmidi.MidiIn, rtmidi.MidiOut):
        with held_stderr():
            probe = kind(rtmidi.API_UNIX_JACK, name="atelier-probe")
        try:
            names |= {port.split(":", 1)[0] for port in probe.get_ports()}
        finally:
            probe.delete()
    return names


def jack_name(base: str) -> str:
    """This bridge's JACK client name through rtmidi: `base`, or `base 2`, `base 3`, ... when
    another client with MIDI ports has it; chosen once per process, so the output and the input
    agree."""
    if base not in _jack_names:
        taken = _jack_clients()
        n = 1
        while (name := base if n == 1 else f"{base} {n}") in taken or f"{name} in" in taken:
            n += 1
        _jack_names[base] = name
    return _jack_names[base]


def _open(port: rtmidi.MidiOut | rtmidi.MidiIn, index: int | None, name: str) -> None:
    """Open an existing port (by index) or a virtual one, holding back the library's own messages."""
    with held_stderr() as said:
        try:
            if index is None:
                port.open_virtual_port(name)
            else:
                port.open_port(index, name)
            return
        except rtmidi.RtMidiError as e:
            failed = str(e)
    library = last_lines(said[0])
    raise PortError(f"cannot open the port ({failed}{'; ' + library if library else ''})")


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


def open_output(port_name: str | None, api: str | None = None, virtual_name: str = DEFAULT_PORT_NAME,
                realtime: bool = True):
    """An existing output port by exact name, or (port_name None) a new virtual port: the native
    JACK output where a JACK server runs (and api is None or "jack"), else through rtmidi."""
    if api in (None, "jack"):
        native = _native_jack(port_name, virtual_name, required=api == "jack", realtime=realtime)
        if native is not None:
            return native
    out, used = _instance(rtmidi.MidiOut, api, lambda: jack_name(virtual_name))
    if port_name is None:
        if used == "winmm":
            raise PortError("Windows cannot create virtual MIDI ports: install loopMIDI, create a port there "
                            "(e.g. 'Atelier') and pass its name with --port (see docs/MIDI_BRIDGE.md)")
        own = JACK_OUT if used in JACKS else virtual_name
        _open(out, None, own)
        return Opened(out, _shown(used, own, virtual_name), used, True)
    _open(out, find_port(out.get_ports(), port_name, "output", used), JACK_OUT if used in JACKS else "out")
    return Opened(out, port_name, used, False)


def open_input(port_name: str | None, api: str | None = None, virtual_name: str = DEFAULT_PORT_NAME
               ) -> Opened | JackInput:
    """An existing input port by exact name, or (port_name None) a new virtual input port
    ("<virtual_name> in"; on JACK the client "<name> in" with the port "in").

    Clock and other realtime messages are let through (rtmidi ignores them by default). Where a
    JACK server runs (and api is None or "jack") the input is the native one (midi_bridge.jack_in:
    each message timed at its own frame)."""
    if api in (None, "jack"):
        native = _native_jack(port_name, virtual_name, required=api == "jack", direction="input")
        if native is not None:
            return native
    inp, used = _instance(rtmidi.MidiIn, api, lambda: jack_name(virtual_name) + " in")
    inp.ignore_types(sysex=True, timing=False, active_sense=True)
    if port_name is None:
        if used == "winmm":
            raise PortError("Windows cannot create virtual MIDI ports: create one in loopMIDI and pass its "
                            "name with --input")
        own = JACK_IN if used in JACKS else f"{virtual_name} in"
        _open(inp, None, own)
        return Opened(inp, _shown(used, own, virtual_name, " in"), used, True)
    _open(inp, find_port(inp.get_ports(), port_name, "input", used), JACK_IN if used in JACKS else "in")
    return Opened(inp, port_name, used, False)


def _native_jack(port_name: str | None, virtual_name: str, required: bool, realtime: bool = True,
                 direction: str = "output"):
    """A JackOutput (or, for direction "input", a JackInput), or None where JACK-Client or libjack
    is missing, or (not `required`) no JACK server runs."""
    try:
        import jack

        from midi_bridge.jack_in import JackInput
        from midi_bridge.jack_out import JackOutput, JackOutputError, close_client
    except (ImportError, OSError):  # JACK-Client, or libjack itself, is not installed: rtmidi's JACK then
        return None
    output = direction == "output"
    client = _jack_client(jack, virtual_name, "" if output else " in", required)
    if client is None:
        return None
    try:
        with held_stderr():  # an output connects to input ports, an input from output ports
            listed = [port.name for port in client.get_ports(is_midi=True, is_input=output, is_output=not output)]
            other = None if port_name is None else listed[find_port(listed, port_name, direction, "jack")]
            if output:
                return JackOutput(client, JACK_OUT, other, realtime)
            return JackInput(client, JACK_IN, other)
    except JackOutputError as e:
        raise PortError(str(e)) from None
    except BaseException:
        close_client(client)
        raise


def _jack_client(jack, base: str, suffix: str, required: bool):
    """A client of the running JACK server called `base` + suffix, or `base 2` + suffix, `base 3`
    + suffix, ... where another client has that name or its pair (`base in` for `base`, and back);
    the number is kept for the process, so the output and the input agree. None where no server
    runs and one is not `required`.

    The client is opened once, under its final name: a probe client closed at start-up (to list
    the names taken) now and then hung the bridge in jack_client_close, about 1 start in 500 with
    two bridges starting at once."""
    for n in range(1, 100):
        name = _jack_names.get(base) or (base if n == 1 else f"{base} {n}")
        with held_stderr() as said:
            try:
                client = jack.Client(name + suffix, use_exact_name=True, no_start_server=True)
            except jack.JackOpenError as e:
                client, status = None, e.status
        library = last_lines(said[0])
        if client is None and status.server_failed:
            if not required:
                return None
            raise PortError(f"cannot open a MIDI system (jack: no JACK server{' -- ' + library if library else ''}); "
                            "start a JACK server (or PipeWire's JACK), or choose another system with --api")
        if client is None:  # jackd2 refuses a name in use as a server error, not as name_not_unique
            if base in _jack_names:
                break
            continue
        if base in _jack_names:
            return client
        pair = f"{name} in" if not suffix else name
        if pair not in {port.name.split(":", 1)[0] for port in client.get_ports(is_midi=True)}:
            _jack_names[base] = name
            return client
        client.close()
    raise PortError(f"JACK refused the client {name + suffix!r}{' -- ' + library if library else ''}; "
                    "choose another --virtual-name")


def _shown(api: str, port: str, virtual_name: str, suffix: str = "") -> str:
    """A virtual port's name as other programs list it."""
    if api in JACKS:
        return f"{jack_name(virtual_name)}{suffix}:{port}"
    if api == "alsa":
        return f"{CLIENT_NAME}:{port}"
    return port


def list_ports(api: str | None = None) -> tuple[str, list[str], list[str]]:
    """(system used, output port names, input port names)."""
    out, used = _instance(rtmidi.MidiOut, api)
    with held_stderr():
        inp = rtmidi.MidiIn(APIS[used], name=CLIENT_NAME)
    try:
        return used, out.get_ports(), inp.get_ports()
    finally:
        out.delete()
        inp.delete()
