"""A client for the Atelier engine. Standard library only (numpy optional), so that
Blender can vendor it; it must never import torch.

    with Client(name="my-script") as engine:
        print(engine.info["device"])
        value = engine.call("ping")
        job = engine.submit("device.benchmark", {"seconds": 5}, on_progress=print)
        job.cancel()

A reader thread routes the engine's frames to their requests, so one client may be
used from several threads and never blocks on another request's work.
"""
from __future__ import annotations

import itertools
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from engine import __version__, paths, protocol

ProgressCallback = Callable[[float, str, Any], None]


class EngineError(Exception):
    """An error answered by the engine (or the loss of it); `code` is stable, see docs/PROTOCOL.md."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Request:
    """One request in flight: its progress events and its single result or error."""

    def __init__(self, client: "Client", request_id: int, on_progress: ProgressCallback | None):
        self.id = request_id
        self.progress: tuple[float, str] = (0.0, "")
        self.job_id: str | None = None  # the engine's job, for jobs.watch / jobs.cancel from elsewhere
        self._client = client
        self._on_progress = on_progress
        self._done = threading.Event()
        self._value: Any = None
        self._error: EngineError | None = None

    def _deliver(self, header: dict) -> None:
        kind = header["type"]
        self.job_id = header.get("job", self.job_id)
        if kind == "progress":
            self.progress = (float(header.get("fraction", 0.0)), str(header.get("message", "")))
            if self._on_progress:
                self._on_progress(*self.progress, header.get("preview"))
        elif kind == "result":
            self._value = header.get("value")
            self._done.set()
        elif kind == "error":
            self._error = EngineError(header.get("code", protocol.INTERNAL), header.get("message", ""))
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        if self._error:
            raise self._error
        return self._value

    def cancel(self) -> None:
        """Ask the engine to stop this request; result() then raises EngineError('cancelled')."""
        if not self.done:
            self._client._send({"type": "cancel", "id": self.id})


class Client:
    def __init__(self, host: str = paths.DEFAULT_HOST, port: int = paths.DEFAULT_PORT, *,
                 token: str | None = None, token_file: str | Path | None = None,
                 name: str = "python", timeout: float = 10.0):
        if token is None:
            token = paths.read_token(Path(token_file) if token_file else None)
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._sock.makefile("rb")
        self._send_lock = threading.Lock()
        self._requests: dict[int, Request] = {}
        self._ids = itertools.count(1)
        self._closed = threading.Event()
        self._send({"type": "hello", "protocol": protocol.PROTOCOL_VERSION, "client": name,
                    "client_version": __version__, "token": token})
        reply = protocol.read_frame(self._reader)
        if reply["type"] == "error":
            self._sock.close()
            raise EngineError(reply.get("code", protocol.INTERNAL), reply.get("message", ""))
        self.info: dict = reply
        self._sock.settimeout(None)
        threading.Thread(target=self._read_loop, name="atelier-client-reader", daemon=True).start()

    def submit(self, op: str, params: dict | None = None, on_progress: ProgressCallback | None = None) -> Request:
        """Send a request and return at once; numpy arrays in params travel as raw bytes."""
        if self._closed.is_set():
            raise EngineError("disconnected", "the connection to the engine is closed; connect again")
        request = Request(self, next(self._ids), on_progress)
        self._requests[request.id] = request
        self._send({"type": "request", "id": request.id, "op": op, "params": params or {}})
        return request

    def call(self, op: str, params: dict | None = None, on_progress: ProgressCallback | None = None,
             timeout: float | None = None) -> Any:
        """Send a request and wait for its result."""
        return self.submit(op, params, on_progress).result(timeout)

    def ping(self) -> float:
        """Round trip in seconds."""
        start = time.perf_counter()
        self.call("ping", timeout=10)
        return time.perf_counter() - start

    def close(self) -> None:
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, header: dict) -> None:
        frame = protocol.encode_frame(header)
        with self._send_lock:
            self._sock.sendall(frame)

    def _read_loop(self) -> None:
        reason = "the engine closed the connection"
        try:
            while True:
                header = protocol.read_frame(self._reader)
                request = self._requests.get(header.get("id"))
                if request is None:
                    continue
                request._deliver(header)
                if request.done:
                    self._requests.pop(request.id, None)
        except (OSError, ConnectionError, protocol.ProtocolError) as e:
            if not self._closed.is_set():
                reason = f"lost the engine: {e}"
        finally:
            self._closed.set()
            for request in list(self._requests.values()):
                request._deliver({"type": "error", "code": "disconnected", "message": reason})
            self._requests.clear()
