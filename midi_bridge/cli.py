"""`atelier-midi`: the MIDI bridge's command line.

Listing ports works today; streaming the engine's notes into a DAW arrives with the music
model's streaming sessions.
"""
from __future__ import annotations

import argparse
import sys

APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atelier-midi", description="Stream Atelier's music into a DAW, live.")
    parser.add_argument("--api", choices=sorted(APIS), help="MIDI system (default: the platform's usual one)")
    parser.add_argument("--list-ports", action="store_true", help="list MIDI input and output ports, then exit")
    args = parser.parse_args(argv)
    if args.list_ports:
        return list_ports(args.api)
    print("atelier-midi: live streaming is not built yet; today it can only --list-ports", file=sys.stderr)
    return 2


def list_ports(api: str | None) -> int:
    import rtmidi

    api_id = getattr(rtmidi, "API_" + APIS[api]) if api else rtmidi.API_UNSPECIFIED
    try:
        outputs, inputs = rtmidi.MidiOut(api_id), rtmidi.MidiIn(api_id)
    except rtmidi.SystemError as e:
        print(f"atelier-midi: cannot open the {api or 'default'} MIDI system ({e}); "
              f"try another --api ({', '.join(sorted(APIS))})", file=sys.stderr)
        return 1
    print("outputs:", *(f"  {name}" for name in outputs.get_ports()) or ["  (none)"], sep="\n")
    print("inputs:", *(f"  {name}" for name in inputs.get_ports()) or ["  (none)"], sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
