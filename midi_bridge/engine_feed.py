"""Keeps the scheduler's queue full from the engine's streaming session, ahead of time.

One thread owns the engine connection: it asks for the next beats whenever the queue
reaches less than `lookahead` beats past the playhead, applies control changes, regenerates,
and answers the player's phrases. The scheduler never waits on it.

Control changes (density, temperature, key, ...) take effect from the next bar line that
the engine can still make in time, not after the queued beats: the queued notes from that
bar line on are dropped, and a new session -- primed with the music up to the bar line --
continues from it with the new controls.

Losing the engine: the queued notes keep playing while this thread reconnects with
exponential backoff (re-reading the engine's address file, so a restarted engine on a new
port is found). Once the queue has played out it silences the output (panic) and keeps
trying until `reconnect_for` seconds are up. A new session is primed with what was just
played, so the music picks up where it left off, at the next bar line.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine import paths
from engine.client import Client, EngineError
from midi_bridge import exits
from midi_bridge.notes import Note
from midi_bridge.respond import PhraseRecorder
from midi_bridge.scheduler import HELPER_PRIORITY, Scheduler, next_bar, raise_priority

TICKS_PER_BEAT = 480
CALL_TIMEOUT = 10.0
CUT_SECONDS = 0.15   # a change applies from the first bar line at least this far (and a 16th) ahead
LOST = (ConnectionError, OSError, TimeoutError)  # and EngineError("disconnected")


class FeedError(Exception):
    """The engine refused what the bridge asked (a missing model, bad settings), or stayed away:
    not worth retrying. `code` is the exit code for it (midi_bridge.exits)."""

    def __init__(self, message: str, code: int = exits.ENGINE_REFUSED):
        super().__init__(message)
        self.code = code


@dataclass
class SessionSettings:
    model: str | None = None
    seed: int = 0
    channel: int = 0            # 0-15
    velocity: int = 80
    velocity_scale: float = 1.0
    controls: dict[str, Any] = field(default_factory=dict)  # temperature, density, key, top_p, ...


@dataclass
class EngineAddress:
    """Where the engine is: --engine HOST:PORT, else the engine.json that `atelier serve` writes."""

    engine: str | None = None
    token_file: Path | None = None
    state_dir: Path | None = None

    def resolve(self) -> tuple[str, int, Path | None]:
        token_file = self.token_file
        if self.engine:
            host, _, port = self.engine.rpartition(":")
            if not host or not port.isdigit():
                raise FeedError(f"--engine {self.engine!r}: write it as HOST:PORT, e.g. 127.0.0.1:{paths.DEFAULT_PORT}",
                                exits.USAGE)
            return host, int(port), token_file
        state = self.state_dir or paths.state_dir()
        running = paths.running_engine(state)
        if running is None:
            return paths.DEFAULT_HOST, paths.DEFAULT_PORT, token_file or state / "token"
        return running.host, running.port, token_file or running.token_file or state / "token"

    def connect(self) -> Client:
        host, port, token_file = self.resolve()
        try:
            return Client(host, port, token_file=token_file, name="atelier-midi", timeout=3.0)
        except FileNotFoundError as e:
            raise ConnectionError(str(e)) from None
        except EngineError as e:
            raise FeedError(f"the engine at {host}:{port} refused the bridge: {e.message}") from None
        except OSError as e:
            raise ConnectionError(f"cannot reach the Atelier engine at {host}:{port} ({e}); start it with "
                                  "`atelier serve`, or pass --engine HOST:PORT") from None


class EngineFeed:
    def __init__(self, address: EngineAddress, settings: SessionSettings, scheduler: Scheduler, *,
                 lookahead: float = 2.0, chunk: float = 1.0, respond: PhraseRecorder | None = None,
                 respond_bars: float = 2.0, reconnect_for: float = 60.0,
                 on_fatal: Callable[[str, int], None] = lambda message, code: None,
                 on_status: Callable[[str], None] = lambda message: None, realtime: bool = False):
        self.address = address
        self.settings = settings
        self.scheduler = scheduler
        self.lookahead = lookahead
        self.chunk = chunk
        self.respond = respond  # None: play continuously; else answer phrases only
        self.respond_bars = respond_bars
        self.reconnect_for = reconnect_for
        self.on_fatal, self.on_status = on_fatal, on_status
        self.realtime = realtime  # raise this thread's priority (see scheduler.HELPER_PRIORITY)
        self.cursor = 0.0        # stream beat where the next notes from the engine go
        self.model: str | None = settings.model
        self.ready = threading.Event()
        self._client: Client | None = None
        self._session: str | None = None
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._run, name="atelier-midi-feed", daemon=True)

    # -- from other threads --------------------------------------------------------------

    def connect_first(self) -> None:
        """Connect and open the session now, in the caller's thread; raises with a clear message."""
        self._open(self.address.connect(), priming=None)

    def start(self) -> None:
        self._thread.start()

    def fill_until(self, beat: float) -> None:
        """Fetch in the caller's thread until the stream reaches `beat` (file mode)."""
        while self.cursor < beat - 1e-9:
            self._fetch(min(self.chunk, beat - self.cursor))

    def set_controls(self, **controls: Any) -> None:
        self._commands.put(("set", controls))

    def regenerate(self) -> None:
        self._commands.put(("regenerate", None))

    def close(self) -> None:
        self._quit.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)
        if self._client:
            try:
                if self._session:
                    self._client.call("music.session.close", {"session": self._session}, timeout=2)
            except (EngineError, *LOST):
                pass
            self._client.close()

    # -- the feed thread -----------------------------------------------------------------

    def _run(self) -> None:
        if self.realtime:
            raise_priority(HELPER_PRIORITY)
        try:
            while not self._quit.is_set():
                try:
                    self._step()
                except EngineError as e:
                    if e.code != "disconnected":
                        raise FeedError(f"the engine refused a request: {e}") from None
                    self._reconnect(str(e.message))
                except LOST as e:
                    self._reconnect(str(e))
        except FeedError as e:
            self.on_fatal(str(e), e.code)
        except Exception as e:  # noqa: BLE001 -- reported, then the bridge shuts down cleanly
            self.on_fatal(f"the engine feed failed: {type(e).__name__}: {e}", exits.FAILED)

    def _step(self) -> None:
        changes: dict[str, Any] = {}
        try:
            while True:
                command, value = self._commands.get(timeout=0.01 if not changes else 0)
                if command == "set":
                    changes.update(value)
                elif command == "regenerate":
                    self._regenerate()
        except queue.Empty:
            pass
        if changes:
            self._apply(changes)
        playhead = self.scheduler.playhead()
        if self.respond is not None:
            self.ready.set()
            phrase = self.respond.take_if_ended(playhead)
            if phrase:
                self._answer(phrase, playhead)
            return
        while playhead + self.lookahead > self.cursor and not self._quit.is_set():
            self._fetch(self.chunk)
        self.ready.set()

    def _call(self, op: str, params: dict) -> Any:
        if self._client is None:
            raise ConnectionError("not connected to the engine")
        return self._client.call(op, params, timeout=CALL_TIMEOUT)

    def _fetch(self, beats: float) -> None:
        value = self._call("music.session.next", {"session": self._session, "beats": beats})
        events, start = np.asarray(value["events"]), int(value["start"])
        tpb, s = TICKS_PER_BEAT, self.settings
        notes = [Note(self.cursor + (int(e[0]) - start) / tpb, int(e[1]) / tpb, int(e[2]),
                      max(1, min(127, round(int(e[3]) * s.velocity_scale))), s.channel) for e in events]
        self.scheduler.push(notes)
        self.cursor += (int(value["position"]) - start) / tpb

    def _open(self, client: Client, priming: list[Note] | None, origin: float = 0.0) -> None:
        if self.model is None:
            self.model = _pick_model(client)
        params: dict[str, Any] = {"model": self.model, "seed": self.settings.seed, "channel": self.settings.channel,
                                  "velocity": self.settings.velocity, "ticks_per_beat": TICKS_PER_BEAT,
                                  **self.settings.controls}
        rows = _rows(priming or [], origin)
        if len(rows):
            params["priming"] = rows
        try:
            value = client.call("music.session.open", params, timeout=CALL_TIMEOUT)
        except EngineError as e:
            client.close()
            if e.code == "disconnected":
                raise ConnectionError(e.message) from None
            raise FeedError(f"cannot open a music session with model {self.model!r}: {e.message}") from None
        self._client, self._session = client, value["session"]

    def _primer(self, cut: float) -> tuple[list[Note], float]:
        """The last two bars of music before stream beat `cut` (played or queued), and the bar line
        they start at."""
        bar = self.scheduler.bar_beats
        origin = max(0.0, next_bar(cut, bar) - 2 * bar)
        return self.scheduler.context(origin, cut), origin

    def _cut(self) -> float:
        """The next bar line far enough ahead for the engine to make new notes before it."""
        bpm = getattr(self.scheduler.clock, "bpm", 120.0)
        return next_bar(self.scheduler.playhead() + max(0.25, CUT_SECONDS * bpm / 60), self.scheduler.bar_beats)

    def _apply(self, changes: dict[str, Any]) -> None:
        """New controls from the next bar line, also when beats past it are queued already."""
        self.settings.controls.update(changes)
        cut = self._cut()
        if cut >= self.cursor:  # nothing queued past the bar line: finish the bar, then change
            while self.cursor < cut - 1e-9:
                self._fetch(min(self.chunk, cut - self.cursor))
            self._call("music.session.set", {"session": self._session, **changes})
        else:
            self._restart(cut)
        self.scheduler.log.note("controls", from_beat=cut, **changes)

    def _restart(self, cut: float) -> None:
        """A new session (self.settings) continues the music from stream beat `cut`; queued notes
        from there on are dropped."""
        primer, origin = self._primer(cut)
        old, client = self._session, self._client
        self._open(client, primer, origin)
        try:
            client.call("music.session.close", {"session": old}, timeout=CALL_TIMEOUT)
        except EngineError as e:
            if e.code == "disconnected":
                raise
        self.scheduler.drop_from(cut)
        self.cursor = cut

    def _regenerate(self) -> None:
        """New music from the next bar line: a new seed, primed with what was just played."""
        cut = self._cut()
        self.settings = replace(self.settings, seed=self.settings.seed + 1)
        self._restart(cut)
        self.scheduler.log.note("regenerate", from_beat=cut, seed=self.settings.seed)

    def _answer(self, phrase: list[Note], playhead: float) -> None:
        """Feed the player's phrase to the session and queue the answer from the next bar line."""
        bar = self.scheduler.bar_beats
        origin = (phrase[0].start // bar) * bar
        rows = _rows(phrase, origin)
        if not len(rows):
            return
        self._call("music.session.feed", {"session": self._session, "notes": rows})
        cut = next_bar(playhead + 0.25, bar)
        self.scheduler.drop_from(cut)
        self.cursor = cut
        self._fetch(self.respond_bars * bar)
        self.scheduler.log.note("respond", notes=len(rows), pitches=[int(r[2]) for r in rows], from_beat=cut,
                                bars=self.respond_bars)
        self.on_status(f"answering a phrase of {len(rows)} notes from beat {cut:g}")

    def _reconnect(self, why: str) -> None:
        if self._client:
            self._client.close()
        self._client = self._session = None
        log = self.scheduler.log
        log.note("engine_lost", why=why, queued=self.scheduler.pending(), until_beat=self.cursor)
        self.on_status(f"lost the engine ({why}); reconnecting while {self.scheduler.pending()} queued notes play out")
        lost_at, delay, silenced = time.monotonic(), 0.2, False
        next_try = lost_at
        while not self._quit.is_set():
            now = time.monotonic()
            if not silenced and self.scheduler.playhead() >= self.cursor:
                self.scheduler.panic("engine lost")
                self.on_status("the queued notes have played out; silent until the engine is back")
                silenced = True
            if now - lost_at > self.reconnect_for:
                raise FeedError(f"lost the engine and could not reconnect within {self.reconnect_for:g} s ({why}); "
                                "start it with `atelier serve` and run atelier-midi again", exits.ENGINE_UNREACHABLE)
            if now >= next_try:
                try:
                    client = self.address.connect()
                    cut = next_bar(max(self.cursor, self.scheduler.playhead() + 0.25), self.scheduler.bar_beats)
                    primer, origin = self._primer(cut)
                    self._open(client, primer, origin)
                    self.scheduler.drop_from(cut)
                    self.cursor = cut
                    log.note("engine_back", from_beat=cut, after=round(now - lost_at, 3))
                    self.on_status(f"engine back after {now - lost_at:.1f} s; playing again from beat {cut:g}")
                    return
                except LOST as e:
                    why = str(e)
                    next_try = now + delay
                    delay = min(delay * 2, 2.0)
            self._quit.wait(0.02)


def _pick_model(client: Client) -> str:
    """The engine's music model: one that ships with Atelier first, else the first listed."""
    models = [m for m in client.call("models.list", timeout=CALL_TIMEOUT)["models"] if m.get("kind") == "music"]
    if not models:
        raise FeedError("the engine has no music model; train one (`atelier train music --corpus bach --name "
                        "bach`) or pass --model NAME")
    models.sort(key=lambda m: (not m.get("builtin"), m["name"]))
    return models[0]["name"]


def _rows(notes: list[Note], origin: float) -> np.ndarray:
    """Notes as the engine takes them: int32 N×5 of start, duration (ticks from `origin`), pitch, velocity, channel."""
    rows = [(round((n.start - origin) * TICKS_PER_BEAT), max(1, round(n.duration * TICKS_PER_BEAT)), n.pitch,
             n.velocity, n.channel) for n in notes if n.start >= origin - 1e-9 and 21 <= n.pitch <= 108]
    return np.asarray(rows, np.int32).reshape(-1, 5)
