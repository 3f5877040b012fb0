"""All socket and process work, on one background thread. Nothing here touches bpy.

The main thread hands the worker `Job`s (an op, its params, and two callbacks); the worker
connects to the engine (starting it first if asked), submits, follows progress, runs the
job's `prepare` step off the main thread (PNG encoding, file writing), and queues the
finished job. The main thread collects finished jobs with `take_finished()`, from a
`bpy.app.timers` callback in the UI, or directly in background mode where timers never fire.
"""
from __future__ import annotations

import atexit
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ._vendor import client as engine_client
from ._vendor import paths as engine_paths
from ._vendor import protocol as engine_protocol


@dataclass(frozen=True)
class Settings:
    """A snapshot of the preferences, taken on the main thread (the worker cannot read bpy)."""

    host: str = engine_paths.DEFAULT_HOST
    port: int = engine_paths.DEFAULT_PORT
    token_file: str = ""  # empty: the engine's default (state dir), or engine.json's
    use_engine_json: bool = True  # follow the address a running `atelier serve` wrote
    engine_python: str = ""  # the Python of the engine's virtual environment
    engine_command: str = ""  # or a whole command line; overrides engine_python
    device: str = "auto"
    autostart: bool = False  # start the engine when it cannot be reached
    start_timeout: float = 90.0

    def address(self) -> tuple[str, int, str]:
        """(host, port, token file) to connect to."""
        running = engine_paths.running_engine() if self.use_engine_json else None
        if running is not None:
            return running.host, running.port, self.token_file or str(running.token_file or "")
        return self.host, self.port, self.token_file


@dataclass
class Job:
    """One request to the engine, from the panel's point of view."""

    op: str
    params: dict
    label: str
    on_result: Callable[["Job"], Any] | None = None  # main thread: results -> datablocks
    prepare: Callable[["Job"], Any] | None = None  # worker thread: heavy work that needs no bpy
    context: dict = field(default_factory=dict)  # main-thread data for on_result (names, locations)
    model_kind: str = ""  # params["model"] empty: the first model of this kind on the engine
    state: str = "queued"  # queued | running | done | failed | cancelled
    progress: float = 0.0
    message: str = ""
    value: Any = None
    prepared: Any = None
    preview: Any = None  # the newest small image the engine sent with progress
    preview_serial: int = 0
    error: str = ""
    error_code: str = ""
    started: float = field(default_factory=time.perf_counter)
    finished_at: float = 0.0
    applied: bool = False
    request: Any = None
    cancel_requested: bool = False
    done_event: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


def default_model(models: list[dict], kind: str, last: str = "") -> str:
    """The model an empty Model field stands for: the user's last choice, else the one the engine
    marks as the kind's default (a shipped model), else `<kind>-default`, else the newest finished
    one. Never a model saved by a training run that did not finish (the engine lists it as partial)."""
    usable = [m for m in models if m.get("kind") == kind and not m.get("partial") and not m.get("error")]
    names = {m.get("name") for m in usable}
    marked = next((m["name"] for m in usable if m.get("default")), "")
    for name in (last, marked, f"{kind}-default"):
        if name and name in names:
            return name
    return max(usable, key=lambda m: str(m.get("created") or ""))["name"] if usable else ""


def unreachable_message(host: str, port: int, reason: str) -> str:
    return (f"Cannot reach the Atelier engine at {host}:{port} ({reason}). Press Start (the engine's Python is "
            "set in the add-on preferences), or start Atelier yourself and press Connect.")


_MODEL_MISSING = re.compile(r"no model named '([^']*)'")


def artist_message(message: str, code: str = "") -> str:
    """An engine's error in the words of the panel: no command lines, no array shapes."""
    message = re.sub(r"^[a-z]+\.[a-z_]+: ", "", message or "").strip()  # the op's name, e.g. "shape.variations: "
    missing = _MODEL_MISSING.search(message)
    if missing:
        return (f"There is no model called '{missing.group(1)}' on the engine: pick one in the Model field, or "
                "train one in the Train section.")
    if "triangulate first" in message or "N ≥ 4" in message:
        return ("That mesh is too simple for Atelier: it needs a closed shape with at least 4 faces and 4 "
                "vertices (a plane or a single triangle is not enough).")
    if code == "path_not_allowed" or "--allow-path" in message:
        return ("The engine is not allowed to read that file. Pick an image that is in this Blender file "
                "instead, or start the engine from the Atelier panel.")
    if "token" in message and "atelier serve" in message:
        return ("The engine's key (its token file) is missing or unusable: press Start in the Atelier panel, "
                "which makes a fresh one, or check the token file in the add-on preferences.")
    if code == "too_many_connections":
        return "The engine is busy with too many connections; close other Atelier windows and press Connect."
    return message


def arrays_in(value: Any) -> int:
    """How many arrays a request's params would carry (each mesh sent is two)."""
    if isinstance(value, dict):
        return sum(arrays_in(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(arrays_in(v) for v in value)
    return int(hasattr(value, "shape") and hasattr(value, "dtype"))


def too_many_arrays(params: dict) -> str:
    """Why a request cannot be sent (more arrays than a frame carries), or ""."""
    count, most = arrays_in(params), engine_protocol.MAX_ARRAYS
    if count <= most:
        return ""
    return (f"That is too much to send to the engine at once: at most {most // 2} meshes go in one request "
            f"(this one has {count // 2}). Select fewer meshes.")


class Worker:
    """The one thread that talks to the engine. Create it with `Worker()`; stop it with `stop()`."""

    def __init__(self) -> None:
        self._tasks: queue.Queue = queue.Queue()
        self._finished: queue.Queue = queue.Queue()
        self._running: list[Job] = []
        self._client: engine_client.Client | None = None
        self._client_key: tuple | None = None
        self._process: subprocess.Popen | None = None  # an engine this add-on started
        self._lock = threading.Lock()
        self.jobs: list[Job] = []  # every job not yet taken by the main thread, for the panel
        self.info: dict | None = None  # the engine's hello: version, device, capabilities
        self.models: list[dict] = []
        self.status = "not connected"
        self.error = ""
        self._working = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="atelier-worker", daemon=True)
        self._thread.start()

    # ---- called from the main thread -------------------------------------------------------
    def submit(self, job: Job, settings: Settings) -> Job:
        with self._lock:
            self.jobs.append(job)
        self._tasks.put(("job", job, settings))
        return job

    def connect(self, settings: Settings, start: bool = False) -> None:
        self._tasks.put(("connect", start, settings))

    def start_engine(self, settings: Settings) -> None:
        self._tasks.put(("start", None, settings))

    def stop_engine(self, settings: Settings) -> None:
        self._tasks.put(("stop", None, settings))

    def restart_engine(self, settings: Settings) -> None:
        self._tasks.put(("restart", None, settings))

    def cancel(self, job: Job) -> None:
        job.cancel_requested = True
        self._tasks.put(("cancel", job, None))

    def active_jobs(self) -> list[Job]:
        with self._lock:
            return [j for j in self.jobs if not j.finished]

    def owns_engine(self) -> bool:
        """Whether the engine running now is one this add-on started (Stop asks first otherwise)."""
        process = self._process
        return process is not None and process.poll() is None

    def busy(self) -> bool:
        """Jobs running, or tasks (connect, start, stop) waiting or in hand."""
        return bool(self.active_jobs()) or self._working or not self._tasks.empty()

    def take_finished(self) -> list[Job]:
        """Finished jobs not yet applied, oldest first (main thread)."""
        taken = []
        while True:
            try:
                job = self._finished.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                if job in self.jobs:
                    self.jobs.remove(job)
            taken.append(job)
        return taken

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued task has been looked at (tests and blocking operators)."""
        done = threading.Event()
        self._tasks.put(("mark", done, None))
        return done.wait(timeout)

    def stop(self, stop_engine: bool = False) -> None:
        """End the thread; cancel running requests; stop the engine only when asked and ours."""
        for job in list(self._running):
            self.cancel(job)
        self._tasks.put(("quit", stop_engine, None))
        self._stop.set()
        self._thread.join(timeout=5)

    # ---- the worker thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=0.02)
            except queue.Empty:
                task = None
            if task is not None:
                kind, item, settings = task
                if kind == "quit":
                    self._shutdown(item)
                    return
                self._working = True
                try:
                    self._handle(kind, item, settings)
                except Exception as e:  # never let the worker die: show the error instead
                    self.error = str(e) if isinstance(e, ConnectionError) else f"{kind}: {e}"
                finally:
                    self._working = False
            self._poll_running()

    def _handle(self, kind: str, item: Any, settings: Settings | None) -> None:
        if kind == "job":
            self._start_job(item, settings)
        elif kind == "connect":
            self._ensure_client(settings, start=item or settings.autostart, refresh=True)
        elif kind == "start":
            self._start_process(settings)
        elif kind == "stop":
            self._stop_process(settings)
        elif kind == "restart":
            self._stop_process(settings)
            self._start_process(settings)
        elif kind == "cancel":
            if item.request is not None:
                item.request.cancel()
            elif not item.finished:
                self._finish(item, "cancelled", error="Cancelled before it started.")
        elif kind == "mark":
            item.set()

    def _ensure_client(self, settings: Settings, start: bool = False,
                       refresh: bool = False) -> engine_client.Client:
        host, port, token_file = settings.address()
        key = (host, port, token_file)
        if self._client is not None and (self._client._closed.is_set() or self._client_key != key):
            self._drop_client()
        if self._client is None:
            self.status, self.error = f"connecting to {host}:{port}", ""  # one current state, not an old error
            try:
                self._client = self._connect(host, port, token_file)
            except (ConnectionError, socket.timeout, OSError) as e:
                if not start:
                    self._set_down(unreachable_message(host, port, _reason(e)))
                    raise ConnectionError(self.error) from None
                self._start_process(settings)  # connects once the engine answers
                if self._client is None:
                    raise ConnectionError(self.error or "the engine started but did not accept the connection")
                return self._client
            self._client_key = key
            refresh = True
        if refresh:
            self.info = self._client.info
            self.models = self._client.call("models.list", timeout=30).get("models", [])
            self.status = f"connected to {host}:{port}"
            self.error = ""
        return self._client

    def _connect(self, host: str, port: int, token_file: str) -> engine_client.Client:
        try:
            token = engine_paths.read_token(Path(token_file) if token_file else None)
        except (FileNotFoundError, ValueError) as e:
            raise ConnectionError(artist_message(str(e))) from None
        try:
            return engine_client.Client(host, port, token=token, name="blender-addon", timeout=5.0)
        except engine_client.EngineError as e:
            raise ConnectionError(f"The engine refused the connection: {artist_message(e.message, e.code)}") \
                from None

    def _set_down(self, message: str) -> None:
        self.status = "not connected"
        self.error = message
        self.info = None

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._client_key = None

    def _start_job(self, job: Job, settings: Settings) -> None:
        if job.cancel_requested:
            self._finish(job, "cancelled", error="Cancelled before it started.")
            return
        try:
            client = self._ensure_client(settings, start=settings.autostart)
        except Exception as e:
            self._finish(job, "failed", error=str(e), code="disconnected")
            return
        if job.model_kind and not job.params.get("model"):
            name = default_model(self.models, job.model_kind, job.context.get("last_model", ""))
            if not name:
                self._finish(job, "failed", code="not_found",
                             error=f"There is no finished {job.model_kind} model yet: train one in the Train "
                                   "section, or install Atelier's default models.")
                return
            job.params["model"] = name
        too_many = too_many_arrays(job.params)
        if too_many:  # the engine would refuse the frame without saying which request it was
            self._finish(job, "failed", error=too_many, code="too_large")
            return
        job.state = "running"
        job.message = "sent"

        def on_progress(fraction: float, message: str, preview: Any) -> None:
            job.progress, job.message = fraction, message
            if preview is not None:  # shown in the panel by previews.icon (main thread)
                job.preview, job.preview_serial = preview, job.preview_serial + 1

        try:
            job.request = client.submit(job.op, job.params, on_progress)
        except (OSError, engine_client.EngineError) as e:
            self._drop_client()
            self._set_down("The connection to the Atelier engine broke. Press Connect (or Start) to try again.")
            if isinstance(e, engine_client.EngineError) and e.code != "disconnected":
                self.error = artist_message(e.message, e.code)
            self._finish(job, "failed", error=self.error, code="disconnected")
            return
        self._running.append(job)

    def _poll_running(self) -> None:
        for job in list(self._running):
            if not job.request.done:
                continue
            self._running.remove(job)
            try:
                job.value = job.request.result(0)
            except engine_client.EngineError as e:
                if e.code == "cancelled":
                    self._finish(job, "cancelled", error="Cancelled.", code=e.code)
                else:
                    message = artist_message(e.message, e.code)
                    if e.code == "disconnected":
                        self._drop_client()
                        message = "The Atelier engine stopped answering (it quit or crashed). Press Start or Connect."
                        self._set_down(message)
                    self._finish(job, "failed", error=message, code=e.code)
                continue
            if job.op == "train":
                try:
                    self.models = self._client.call("models.list", timeout=30).get("models", [])
                except Exception:
                    pass
            try:
                if job.prepare is not None:
                    job.prepared = job.prepare(job)
            except Exception as e:
                self._finish(job, "failed", error=f"could not prepare the result: {e}", code="client")
                continue
            self._finish(job, "done")

    def _finish(self, job: Job, state: str, error: str = "", code: str = "") -> None:
        job.state, job.error, job.error_code = state, error, code
        job.finished_at = time.perf_counter()
        if state == "done":
            job.progress = 1.0
        job.done_event.set()
        self._finished.put(job)

    # ---- the engine process -------------------------------------------------------------------
    def _command(self, settings: Settings) -> list[str]:
        if settings.engine_command.strip():
            return shlex.split(settings.engine_command)
        python = settings.engine_python.strip()
        if not python:
            raise ConnectionError("Set the engine's Python (the python of Atelier's virtual environment, e.g. "
                                  ".venv/bin/python) or a start command in the add-on preferences, then press Start")
        return [python, "-m", "engine", "serve", "--port", str(settings.port), "--device", settings.device]

    def _start_process(self, settings: Settings) -> None:
        host, port, _ = settings.address()
        if self._reachable(host, port):
            self.status = f"an engine already runs at {host}:{port}"
            self._ensure_client(settings, refresh=True)
            return
        command = self._command(settings)
        log = Path(tempfile.gettempdir()) / "atelier-engine-blender.log"
        self.status, self.error = "starting the engine", ""
        with open(log, "ab") as out:
            try:
                self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out,
                                                 stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                self._set_down(f"Could not start the engine with {command[0]!r}: {e.strerror}. Check the "
                               "engine's Python or command in the add-on preferences.")
                raise ConnectionError(self.error) from None
        deadline = time.monotonic() + settings.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = log.read_text(errors="replace")[-600:]
                self._process = None
                self._set_down(f"The engine exited at start; its log ({log}) ends with: {tail}")
                raise ConnectionError(self.error)
            host, port, _ = settings.address()
            if self._reachable(host, port):
                self._drop_client()
                self._ensure_client(settings, refresh=True)
                return
            time.sleep(0.2)
        self._set_down(f"The engine did not answer within {settings.start_timeout:.0f} s; see {log}")
        raise ConnectionError(self.error)

    def _stop_process(self, settings: Settings) -> None:
        for job in list(self._running):
            job.request.cancel()
        self._drop_client()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        elif settings is not None:
            # An engine started elsewhere: `atelier serve` records its pid in engine.json.
            running = engine_paths.running_engine()
            if running is not None and running.host in ("127.0.0.1", "localhost", "::1") and running.pid:
                try:
                    os.kill(running.pid, signal.SIGTERM)
                    _wait_closed(running.host, running.port, 15)
                except OSError:
                    pass
        self._process = None
        self._set_down("The engine is stopped. Press Start engine to start it again.")
        self.models = []

    @staticmethod
    def _reachable(host: str, port: int) -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def _shutdown(self, stop_engine: bool) -> None:
        for job in list(self._running):
            try:
                job.request.cancel()
            except OSError:
                pass
        self._drop_client()
        if stop_engine and self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _wait_closed(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Worker._reachable(host, port):
        time.sleep(0.1)


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused: is it running?"
    if isinstance(e, socket.timeout):
        return "timed out"
    text = getattr(e, "strerror", None) or str(e)
    return text or type(e).__name__


_worker: Worker | None = None


def connected() -> bool:
    """Whether the engine answered the last time the worker asked (without starting a worker)."""
    return _worker is not None and _worker.info is not None


def get() -> Worker:
    """The add-on's worker, started on first use (not at register: keeps registering fast)."""
    global _worker
    if _worker is None:
        _worker = Worker()
    return _worker


def shutdown() -> None:
    """Stop the thread, and the engine process if this add-on started it (not one started elsewhere)."""
    global _worker
    if _worker is not None:
        _worker.stop(stop_engine=True)
        _worker = None


atexit.register(shutdown)  # Blender quitting does not unregister add-ons: don't orphan our engine
