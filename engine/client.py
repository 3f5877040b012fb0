"""A client for the Atelier engine. Standard library only (numpy optional), so that
Blender can vendor it; it must never import torch.

    with Client(name="my-script") as engine:
        print(engine.info["device"])
        value = engine.call("ping")
        job = engine.submit("device.benchmark", {"seconds": 5}, on_progress=print)
        job.cancel()

A reader thread routes the engine's frames to their requests, so one client may be
used from several threads and never blocks on another request's work.

An engine serving TLS is spoken to over TLS when its address says so (`tls://HOST`, or the
engine recorded in engine.json serving TLS); its recorded certificate is pinned.
"""
from __future__ import annotations

import itertools
import os
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
    """`tls`: None decides from the address; `tls_cert`: the engine's certificate to trust (default: the one
    engine.json records for this address, else $ATELIER_TLS_CERT, else the system's certificate authorities)."""

    def __init__(self, host: str = paths.DEFAULT_HOST, port: int = paths.DEFAULT_PORT, *,
                 token: str | None = None, token_file: str | Path | None = None,
                 name: str = "python", timeout: float = 10.0, tls: bool | None = None,
                 tls_cert: str | Path | None = None):
        host, tls, tls_cert = _tls_settings(host, port, tls, tls_cert)
        if token is None:
            token = paths.read_token(Path(token_file) if token_file else None)
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            channel = TlsChannel(self._sock, host, tls_cert)
            self._sendall, self._reader = channel.sendall, channel
        else:
            self._sendall, self._reader = self._sock.sendall, self._sock.makefile("rb")
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
            self._sendall(frame)

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


def _tls_settings(host: str, port: int, tls: bool | None, cert: str | Path | None) -> tuple[str, bool, str | None]:
    """(host, whether to speak TLS, the certificate to pin) for an address."""
    if host.startswith(paths.TLS_SCHEME):
        host, tls = host[len(paths.TLS_SCHEME):], True if tls is None else tls
    if tls is None or (tls and cert is None):
        recorded = paths.running_engine()
        if recorded is not None and (recorded.host, recorded.port) == (host, port):
            tls = recorded.tls if tls is None else tls
            cert = cert or (recorded.tls_cert if recorded.tls else None)
    if tls and cert is None:
        cert = os.environ.get("ATELIER_TLS_CERT") or None
    return host, bool(tls), str(cert) if cert else None


class TlsChannel:
    """TLS through memory buffers: the reader thread and the senders never call OpenSSL at the same time
    (an SSL object is not safe to use from two threads at once; a plain SSLSocket would be)."""

    def __init__(self, sock: socket.socket, host: str, cert: str | None):
        import ssl  # only when TLS is used: a bare Python may be built without it

        context = ssl.create_default_context(cafile=cert)
        if cert:
            context.check_hostname = False  # the engine's own certificate is pinned: trusting only it is the check
        self._ssl = ssl
        self._sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=host)
        self._lock = threading.Lock()  # around every call into the SSL object
        self._send_lock = threading.Lock()  # keeps encrypted records in order on the wire
        self._plain = bytearray()
        while True:
            try:
                self._call(self._tls.do_handshake)
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
        self._flush()

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            with self._lock:
                self._tls.write(data)
                encrypted = self._outgoing.read()
            self._sock.sendall(encrypted)

    def read(self, n: int) -> bytes:
        """Up to n bytes, fewer only at the end of the stream (like a buffered socket file)."""
        while len(self._plain) < n:
            try:
                self._plain += self._call(self._tls.read, 1 << 16)
            except self._ssl.SSLWantReadError:
                self._flush()  # a TLS 1.3 key update answers while reading
                if not self._feed():
                    break
            except (self._ssl.SSLZeroReturnError, self._ssl.SSLEOFError):
                break
        data = bytes(self._plain[:n])
        del self._plain[:n]
        return data

    def _call(self, method, *args):
        with self._lock:
            return method(*args)

    def _feed(self) -> bool:
        data = self._sock.recv(1 << 16)
        if data:
            with self._lock:
                self._incoming.write(data)
        else:
            with self._lock:
                self._incoming.write_eof()
        return bool(data)

    def _flush(self) -> None:
        with self._send_lock:
            with self._lock:
                encrypted = self._outgoing.read()
            if encrypted:
                self._sock.sendall(encrypted)
