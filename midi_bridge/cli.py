"""`atelier-midi`: stream the engine's music into a DAW, live and in time.

    atelier-midi                          # virtual port "Atelier", 120 BPM, the engine's music model
    atelier-midi --port "loopMIDI Port"   # an existing port, by its exact name
    atelier-midi --input "DAW clock" --clock midi      # follow the DAW's transport and tempo
    atelier-midi --input "Keys" --respond              # call and response
    atelier-midi --file out.mid --bars 16              # no port: write the stream to a file
    atelier-midi --list-ports
    atelier-midi --panic --port "Synth"                # All Notes Off + All Sound Off, then exit

See docs/MIDI_BRIDGE.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.music.ops import CONTROLS as MUSIC_CONTROLS
from engine.music.ops import OPS as MUSIC_OPS
from midi_bridge import exits, ports
from midi_bridge.controls import CONTROLS, DEFAULT_CCS

# The engine declares the ranges and defaults of what the bridge sends it; the flags read them there.
SESSION_PARAMS = next(op.params for op in MUSIC_OPS if op.name == "music.session.open")


def _meter(text: str) -> tuple[int, int]:
    try:
        top, bottom = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"write the meter as N/D, e.g. 4/4 or 6/8 (got {text!r})") from None
    if not 1 <= top <= 32 or bottom not in (1, 2, 4, 8, 16, 32):
        raise argparse.ArgumentTypeError(f"meter {text!r}: N from 1 to 32 over D in 1, 2, 4, 8, 16, 32")
    return top, bottom


def _channels(text: str) -> tuple[int, ...]:
    """'all' or MIDI channels 1-16 separated by commas ('1,2,10'); returned counting from 0."""
    if text.strip().lower() == "all":
        return tuple(range(16))
    try:
        channels = tuple(sorted({int(part) - 1 for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"write channels as 1-16 separated by commas, or 'all' (got {text!r})") from None
    if not channels or not all(0 <= c <= 15 for c in channels):
        raise argparse.ArgumentTypeError(f"channels must be 1-16, e.g. '1,10', or 'all' (got {text!r})")
    return channels


def _ranged(kind, low, high):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range {low}..{high}")
        return value
    return parse


def _add_control(group: argparse._ArgumentGroup, name: str) -> None:
    """A flag for one of the engine's music controls, checked against its declared range."""
    spec = MUSIC_CONTROLS[name]
    if spec.type == "bool":  # absent: the engine's default; each has its opposite (--no-parallels / --parallels)
        flag, opposite = name.replace("_", "-"), name[3:] if name.startswith("no_") else f"no_{name}"
        group.add_argument(f"--{flag}", dest=name, action="store_const", const=True, default=None,
                           help=spec.doc.replace("%", "%%"))
        group.add_argument(f"--{opposite.replace('_', '-')}", dest=name, action="store_const", const=False,
                           help=f"the opposite of --{flag}")
        return
    kind = {"int": int, "float": float}.get(spec.type, str)
    parse = _ranged(kind, spec.min, spec.max) if spec.min is not None and spec.max is not None else kind
    limits = f"{spec.min:g}..{spec.max:g}; " if parse is not kind else ""
    default = "none" if spec.default is None else f"{spec.default:g}" if kind is not str else spec.default
    group.add_argument(f"--{name.replace('_', '-')}", type=parse,
                       help=f"{spec.doc} ({limits}engine default {default})".replace("%", "%%"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atelier-midi", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Default CCs: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_CCS.items())
                                + ".\n\n" + exits.help_text())
    g = p.add_argument_group("ports")
    g.add_argument("--api", choices=sorted(ports.APIS), help="MIDI system (default: JACK where a JACK server runs, "
                   "else ALSA on Linux, CoreMIDI on macOS, Windows MultiMedia on Windows). 'jack' places each "
                   "message at its exact frame and times each incoming one at its frame; 'rtmidi-jack' goes "
                   "through rtmidi, up to a period late")
    g.add_argument("--list-ports", action="store_true", help="list MIDI output and input ports, then exit")
    g.add_argument("--port", help="send to this existing output port (exact name from --list-ports); "
                   "default: create a virtual port")
    g.add_argument("--virtual-name", default=ports.DEFAULT_PORT_NAME,
                   help="name of the virtual output port (default Atelier; on JACK the client: 'Atelier:out', a "
                   "second bridge 'Atelier 2:out')")
    g.add_argument("--input", help="listen on this existing input port (exact name): clock, CCs, call and response")
    g.add_argument("--virtual-input", action="store_true",
                   help="create a virtual input port instead, for the DAW to send clock, CCs and notes to: "
                   "'Atelier in' (on JACK 'Atelier in:in'; named after --virtual-name)")
    g = p.add_argument_group("timing")
    g.add_argument("--clock", choices=("internal", "midi"), default="internal",
                   help="internal tempo, or follow MIDI beat clock (Start/Stop/Continue/SPP) on --input")
    g.add_argument("--bpm", type=_ranged(float, 20, 400), default=120.0, help="internal tempo (default 120)")
    g.add_argument("--meter", type=_meter, default=(4, 4), help="time signature; starts fall on bar lines (4/4)")
    g.add_argument("--latency-ms", type=_ranged(float, -500, 500), default=0.0,
                   help="shift every send by this many ms (negative: earlier, to make up for a slow synth)")
    g.add_argument("--no-realtime", action="store_true",
                   help="keep the timing thread at normal priority (default: real-time where the OS allows)")
    g.add_argument("--lookahead", type=_ranged(float, 0.5, 32), default=2.0,
                   help="beats of notes kept ready ahead of the playhead (control changes are heard after them)")
    g = p.add_argument_group("music")
    g.add_argument("--model", help="music model in the engine (default: the one that ships, else the first)")
    seed, channel, velocity = SESSION_PARAMS["seed"], SESSION_PARAMS["channel"], SESSION_PARAMS["velocity"]
    g.add_argument("--seed", type=_ranged(int, seed.min, seed.max), default=seed.default,
                   help=f"{seed.doc} (default {seed.default})")
    for name in MUSIC_CONTROLS:
        _add_control(g, name)
    # Channels count from 1 here, as in every DAW; the engine counts from 0.
    g.add_argument("--channel", type=_ranged(int, channel.min + 1, channel.max + 1), default=channel.default + 1,
                   help=f"MIDI channel {channel.min + 1}-{channel.max + 1} (default {channel.default + 1})")
    g.add_argument("--program", type=_ranged(int, 1, 128), help="send this program change (1-128, GM numbering) first")
    g.add_argument("--velocity", type=_ranged(int, velocity.min, velocity.max), default=velocity.default,
                   help=f"{velocity.doc} (default {velocity.default})")
    g.add_argument("--velocity-scale", type=_ranged(float, 0.0, 4.0), default=1.0, help="multiply velocities")
    g.add_argument("--panic-channels", type=_channels, metavar="LIST",
                   help="channels to reset (CC 123 All Notes Off, CC 120 All Sound Off) at start and exit: "
                   "1-16 separated by commas, or 'all' (default: --channel; with --panic: all)")
    g.add_argument("--panic", action="store_true", help="only send All Notes Off and All Sound Off on the panic "
                   "channels to --port (or a new virtual port), wait until they left, and exit")
    g.add_argument("--max-note-beats", type=_ranged(float, 0.25, 64), default=8.0, help="cap on a note's length")
    g = p.add_argument_group("control and call and response")
    g.add_argument("--respond", action="store_true", help="play only answers: when the player's phrase on --input "
                   "ends, continue it")
    g.add_argument("--respond-after", type=_ranged(float, 0.25, 64), default=2.0,
                   help="beats of silence that end a phrase (default 2); the 'respond' CC ends it at once")
    g.add_argument("--respond-bars", type=_ranged(float, 0.25, 64), default=2.0, help="length of an answer in bars")
    g.add_argument("--learn", nargs="+", choices=CONTROLS, metavar="CONTROL",
                   help=f"bind controls to the next CCs that move on --input, save, exit ({', '.join(CONTROLS)})")
    g.add_argument("--controls-file", type=Path, help="CC bindings (default: midi-controls.json in the state folder)")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", metavar="HOST:PORT", help="default: the running engine's address file, else "
                   "127.0.0.1:47960")
    g.add_argument("--token-file", type=Path)
    g.add_argument("--reconnect-seconds", type=_ranged(float, 0, 86400), default=60.0,
                   help="how long to keep trying after losing the engine (default 60)")
    g = p.add_argument_group("file mode and diagnostics")
    g.add_argument("--file", type=Path, help="write the stream to this .mid file instead of a port")
    g.add_argument("--bars", type=_ranged(float, 0.25, 1024), default=8.0, help="file mode: how many bars (8)")
    g.add_argument("--event-log", type=Path, help="append every sent message with its due and send time (JSON lines)")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # never start a JACK server as a side effect
    args = parser().parse_args(argv)
    if args.list_ports:
        return list_ports(args.api)
    from midi_bridge.engine_feed import EngineAddress, FeedError, SessionSettings

    controls = {k: getattr(args, k) for k in MUSIC_CONTROLS if getattr(args, k) is not None}
    settings = SessionSettings(model=args.model, seed=args.seed, channel=args.channel - 1, velocity=args.velocity,
                               velocity_scale=args.velocity_scale, controls=controls)
    address = EngineAddress(args.engine, args.token_file)
    program = args.program - 1 if args.program else None
    if args.panic:
        from midi_bridge import bridge

        return bridge.panic_only(bridge.Options(api=args.api, port=args.port, virtual_name=args.virtual_name,
                                                panic_channels=args.panic_channels, event_log=args.event_log))
    if args.file:
        from midi_bridge import file_mode

        try:
            summary = file_mode.render(args.file, args.bars, address=address, settings=settings, bpm=args.bpm,
                                       meter=args.meter, program=program, max_note_beats=args.max_note_beats)
        except FeedError as e:
            print(f"atelier-midi: {e}", file=sys.stderr)
            return e.code
        except ConnectionError as e:
            print(f"atelier-midi: {e}", file=sys.stderr)
            return exits.ENGINE_UNREACHABLE
        print(json.dumps(summary))
        return exits.OK
    from midi_bridge import bridge

    opts = bridge.Options(api=args.api, port=args.port, virtual_name=args.virtual_name, input=args.input,
                          virtual_input=args.virtual_input, clock=args.clock, bpm=args.bpm,
                          bar_beats=args.meter[0] * 4 / args.meter[1], latency_ms=args.latency_ms, program=program,
                          max_note_beats=args.max_note_beats, lookahead=args.lookahead, settings=settings,
                          panic_channels=args.panic_channels,
                          respond=args.respond, respond_after=args.respond_after, respond_bars=args.respond_bars,
                          learn=args.learn or [], control_file=args.controls_file, address=address,
                          reconnect_for=args.reconnect_seconds, event_log=args.event_log,
                          realtime=not args.no_realtime)
    try:
        return bridge.run(opts)
    except FeedError as e:
        print(f"atelier-midi: {e}", file=sys.stderr)
        return e.code


def list_ports(api: str | None) -> int:
    try:
        used, outputs, inputs = ports.list_ports(api)
    except ports.PortError as e:
        print(f"atelier-midi: {e}", file=sys.stderr)
        return exits.MIDI
    print(f"MIDI system: {used}")
    print("outputs:", *(f"  {name}" for name in outputs) or ["  (none)"], sep="\n")
    print("inputs:", *(f"  {name}" for name in inputs) or ["  (none)"], sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
