"""An optional JSON-lines log of everything the bridge sends and why (`--event-log`).

Each sent message gets a sequence number, its due and actual send time on the monotonic
clock (with the native JACK output, the time it was handed over, ahead of its due time) (the same clock in every process of one machine, so a receiver can compare its own
arrival times), and the song beat it belongs to. Other records note what happened:
transport changes, engine loss, panics, phrases heard. The timing path only appends to a
list; a background thread writes the file.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable


class EventLog:
    def __init__(self, path: str | Path | None, on_thread_start: Callable[[], Any] | None = None):
        self._path = Path(path) if path else None
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._seq = 0
        self._closed = threading.Event()
        self._file = open(self._path, "w", buffering=1) if self._path else None
        self._on_thread_start = on_thread_start
        if self._file:
            threading.Thread(target=self._drain_loop, name="atelier-midi-log", daemon=True).start()

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def sent(self, message: list[int], due: float, sent: float, beat: float | None, why: str = "") -> None:
        if not self._file:
            return
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, "msg": list(message), "due": due, "sent": sent, "beat": beat}
            if why:
                record["why"] = why
            self._pending.append(record)

    def note(self, event: str, **fields: Any) -> None:
        if not self._file:
            return
        with self._lock:
            self._pending.append({"event": event, "t": time.monotonic(), **fields})

    def _drain(self) -> None:
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            if not self._file.closed:
                self._file.write("".join(json.dumps(record) + "\n" for record in pending))

    def _drain_loop(self) -> None:
        if self._on_thread_start:
            self._on_thread_start()
        while not self._closed.wait(0.1):
            self._drain()

    def close(self) -> None:
        if self._file and not self._closed.is_set():
            self._closed.set()
            self._drain()
            with self._write_lock:
                self._file.close()


def read(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log (tests and the benchmark read it back)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill
    return records
