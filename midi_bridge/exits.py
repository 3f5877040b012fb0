"""`atelier-midi`'s exit codes: one per kind of failure, so scripts can tell them apart."""
from __future__ import annotations

OK = 0              # stopped as asked (Ctrl+C, SIGTERM, the file written, the ports listed)
FAILED = 1          # an unexpected error inside the bridge (please report it, with --event-log)
USAGE = 2           # a bad command line or settings file (argparse uses 2 too)
MIDI = 3            # no MIDI system, or a port that does not exist or cannot be opened
ENGINE_UNREACHABLE = 4  # the engine cannot be reached, was lost for longer than --reconnect-seconds, or is too slow
ENGINE_REFUSED = 5  # the engine refused: no such model, settings it does not accept

HELP = {OK: "stopped as asked", FAILED: "an unexpected error in the bridge", USAGE: "bad command line or settings file",
        MIDI: "no MIDI system, or a port that does not exist or cannot be opened",
        ENGINE_UNREACHABLE: "the engine cannot be reached, or was lost for longer than --reconnect-seconds",
        ENGINE_REFUSED: "the engine refused (no such model, settings it does not accept)"}


def help_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {what}" for code, what in HELP.items())
