"""Holding back what C libraries print while the bridge opens MIDI systems.

ALSA and libjack write their own diagnostics straight to file descriptor 2 ("ALSA lib
seq_hw.c: ... No such file or directory", "Cannot connect to server socket ..."), ahead
of and in other words than the bridge's messages. `held_stderr()` sends fd 2 to a
temporary file meanwhile; the text is kept, so an error can quote it when it helps.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def held_stderr() -> Iterator[list[str]]:
    """Within the block, what is written to fd 2 is held back; afterwards the yielded list
    holds it as one string."""
    held: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (an embedded interpreter): nothing to hold back
        yield held
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.append(sink.read().decode(errors="replace"))


NOISE = ("JackShmReadWritePtr",)  # lines that say nothing to a user (libjack's shared memory bookkeeping)


def last_lines(text: str, count: int = 2) -> str:
    """The last lines of what a library printed, joined, for an error message ('' if none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not any(n in line for n in NOISE)]
    return " / ".join(lines[-count:])
