"""The socket server: connections, the handshake, framing and routing. No compute here.

Fair service. Each connection has its own reader and writer task, so a slow or stalled client
only ever waits on itself. A reader handles one frame per turn of the loop, so a client that
pipelines thousands of requests takes turns with the others, and it stops reading from a
client whose replies pile up unread (backpressure), so memory stays bounded. Job events reach
a connection from worker threads through `loop.call_soon_threadsafe`, progress thinned to a
rate (`ProgressThrottle`); when a client falls behind, its progress events are dropped (never
its results). Every watcher of a job shares one progress stream (`JobStream`).
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import ssl
import time
from typing import Any

from engine import protocol
from engine.ops import JobFailed
from engine.server.core import Engine
from engine.server.jobs import Job
from engine.server.progress import ProgressThrottle

log = logging.getLogger("atelier.server")

HELLO_TIMEOUT_S = 10.0
SHUTDOWN_JOBS_S = 30.0  # how long a shutdown waits for running jobs (training saves a checkpoint)
SHUTDOWN_FLUSH_S = 2.0  # how long it then gives each client to take its last replies
MAX_CONNECTIONS = 1024  # default of --max-connections
MAX_ACTIVE_REQUESTS = 64  # jobs running per connection
MAX_UNREAD_REPLIES = 256  # replies queued for a client before the engine stops reading its requests
MAX_UNREAD_REPLY_BYTES = 8 << 20  # ditto, in bytes
MAX_QUEUED_PROGRESS = 16  # progress events queued per connection; more are dropped
MAX_ERROR_MESSAGE = 2000  # characters of an error message sent to a client; the log keeps it whole
WATCH_PROGRESS_HZ = 10  # progress events per second for jobs.watch
REQUEST_PROGRESS_HZ = 20  # progress events per second for the client that asked
LOG_EVERY_S = 10.0  # at most one log line per kind of accept or loop error in this time
_connection_ids = itertools.count(1)


class Connection:
    def __init__(self, server: "Server", writer: asyncio.StreamWriter):
        self.id = next(_connection_ids)
        self.server = server
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[tuple[bytes, bool] | None] = asyncio.Queue()
        self.queued_progress = 0
        self.queued_bytes = 0
        self.room = asyncio.Event()  # set while the client reads its replies fast enough
        self.room.set()
        self.requests: dict[Any, str] = {}  # request id -> job id, while the job runs
        self.watches: list[tuple[JobStream, Any]] = []  # (stream, request id) of jobs.watch requests
        self.closed = False
        self.writer_task: asyncio.Task | None = None

    def send(self, header: dict) -> None:
        """Queue a frame; call on the loop thread."""
        self.send_frame(encode(header), header["type"] == "progress")

    def send_frame(self, frame: bytes, is_progress: bool) -> None:
        if self.closed:
            return
        if is_progress:
            if self.queued_progress >= MAX_QUEUED_PROGRESS:
                return
            self.queued_progress += 1
        self.queued_bytes += len(frame)
        self.outbox.put_nowait((frame, is_progress))
        if self.outbox.qsize() > MAX_UNREAD_REPLIES or self.queued_bytes > MAX_UNREAD_REPLY_BYTES:
            self.room.clear()

    async def write_loop(self) -> None:
        try:
            while (item := await self.outbox.get()) is not None:
                frame, is_progress = item
                self.queued_bytes -= len(frame)
                if is_progress:
                    self.queued_progress -= 1
                if self.outbox.qsize() <= MAX_UNREAD_REPLIES // 2 and self.queued_bytes <= MAX_UNREAD_REPLY_BYTES // 2:
                    self.room.set()
                self.writer.write(frame)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self.room.set()
            self.writer.close()

    def forward(self, request_id: Any) -> ProgressThrottle:
        """A job listener that relabels the job's events with this connection's request id."""
        def deliver(frame: bytes, final: bool) -> None:
            if final:
                self.requests.pop(request_id, None)
            self.send_frame(with_id(frame, request_id), is_progress=not final)
        return ProgressThrottle(self.loop, REQUEST_PROGRESS_HZ, deliver, encode)


class JobStream:
    """All jobs.watch requests of one job, on one listener: however many watch, the job emits to one.

    Each event is encoded once; progress reaches the watchers at most WATCH_PROGRESS_HZ times a
    second, the latest event each time; the outcome always arrives.
    """

    def __init__(self, server: "Server", job: Job):
        self.server, self.job = server, job
        self.watchers: dict[tuple[Connection, Any], None] = {}
        self.on_event = ProgressThrottle(asyncio.get_running_loop(), WATCH_PROGRESS_HZ, self._fan_out, encode)

    def _fan_out(self, frame: bytes, final: bool) -> None:
        for connection, request_id in list(self.watchers):
            connection.send_frame(with_id(frame, request_id), is_progress=not final)
        if final:
            self.watchers.clear()
            self.server.streams.pop(self.job.id, None)

    def remove(self, connection: Connection, request_id: Any) -> None:
        self.watchers.pop((connection, request_id), None)
        if not self.watchers and self.server.streams.get(self.job.id) is self:
            del self.server.streams[self.job.id]
            self.job.remove_listener(self.on_event)


class Throttle:
    """At most one log line per `every` seconds for each kind of message; the rest are counted."""

    def __init__(self, every: float = LOG_EVERY_S):
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """None: hold this one back; else how many of its kind were held back since the last one."""
        now = time.monotonic()
        if now - self._last.get(kind, -self.every) < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)

    def loop_errors(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """An asyncio exception handler: out of file descriptors, accept fails ~1,000 times a second."""
        held = self.allow(str(context.get("message")))
        if held is None:
            return
        if held:
            context = {**context, "message": f"{context.get('message')} ({held} more like it not logged)"}
        loop.default_exception_handler(context)


class Server:
    def __init__(self, engine: Engine, token: str, max_connections: int = MAX_CONNECTIONS):
        self.engine = engine
        self.token = token
        self.max_connections = max_connections
        self.open = 0  # accepted connections, authenticated or not
        self.connections: set[Connection] = set()  # authenticated ones
        self.streams: dict[str, JobStream] = {}  # job id -> its jobs.watch stream
        self.throttle = Throttle()
        self.shutting_down = False
        self._frames: dict[tuple, bytes] = {}  # cached hello and engine.info frames, by loaded models

    async def shut_down(self, listener: asyncio.AbstractServer, jobs_timeout: float = SHUTDOWN_JOBS_S) -> bool:
        """Stop accepting, stop every job (training checkpoints), tell the clients, close. True if all jobs ended."""
        listener.close()
        self.shutting_down = True
        why = "the engine is shutting down"
        stuck = await asyncio.to_thread(self.engine.scheduler.stop, jobs_timeout, protocol.SHUTTING_DOWN, why)
        for job in stuck:
            log.error("job %s (%s) did not stop within %.0f s; exiting without it", job.id, job.op, jobs_timeout)
        for connection in list(self.connections):
            connection.send(protocol.error_header(None, protocol.SHUTTING_DOWN, f"{why}; connect again once it "
                                                  "is back (training resumes with resume=true)"))
            connection.outbox.put_nowait(None)
        writers = [c.writer_task for c in self.connections if c.writer_task]
        if writers:
            _, late = await asyncio.wait(writers, timeout=SHUTDOWN_FLUSH_S)
            for connection in list(self.connections):
                if connection.writer_task in late:
                    connection.writer.transport.abort()  # a client that reads nothing must not hold us
        return not stuck

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.max_connections:
            return self._refuse(writer)
        self.open += 1
        connection = Connection(self, writer)
        writer_task = connection.writer_task = asyncio.create_task(connection.write_loop())
        try:
            if await self._handshake(reader, connection):
                self.connections.add(connection)
                await self._serve(reader, connection)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.TimeoutError):
            pass
        except Exception:
            log.exception("connection %d failed", connection.id)
        finally:
            self.open -= 1
            self.connections.discard(connection)
            self._drop_jobs(connection)
            connection.outbox.put_nowait(None)
            await writer_task

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        message = (f"the engine has {self.open} connections open, its limit; close some clients or raise the limit "
                   "with atelier serve --max-connections")
        held = self.throttle.allow("refused")
        if held is not None:
            log.warning("refused %d connection(s): %d connections open, the limit (--max-connections)",
                        held + 1, self.open)
        writer.write(encode(protocol.error_header(None, protocol.TOO_MANY_CONNECTIONS, message)))
        writer.close()  # after the frame is flushed

    async def _handshake(self, reader: asyncio.StreamReader, connection: Connection) -> bool:
        try:
            hello = await asyncio.wait_for(read_frame(reader, protocol.MAX_UNAUTHENTICATED_FRAME_BYTES),
                                           HELLO_TIMEOUT_S)
        except protocol.ProtocolError as e:
            connection.send(protocol.error_header(None, e.code, e.message))
            return False
        if hello.get("type") != "hello":
            connection.send(protocol.error_header(None, protocol.AUTH_FAILED,
                                                  "the first message must be a hello with protocol and token"))
            return False
        token = hello.get("token")
        # An empty token never authenticates, even if the engine's own token were empty.
        if not isinstance(token, str) or not token or not self.token \
                or not hmac.compare_digest(token.encode(), self.token.encode()):
            what = "no token was given" if not token else "the token is wrong"
            connection.send(protocol.error_header(None, protocol.AUTH_FAILED, f"{what}; clients read it from the "
                                                  "engine's token file (atelier serve prints where it is)"))
            return False
        if hello.get("protocol") != protocol.PROTOCOL_VERSION:
            connection.send(protocol.error_header(None, protocol.PROTOCOL_MISMATCH,
                                                  f"this engine speaks protocol {protocol.PROTOCOL_VERSION}, the client "
                                                  f"{hello.get('protocol')!r}; update the client or the engine"))
            return False
        log.info("connection %d: %s", connection.id, str(hello.get("client", "?"))[:64])
        connection.send_frame(self._cached_frame("hello"), is_progress=False)
        return True

    def _cached_frame(self, which: str) -> bytes:
        """The hello, or engine.info's result without its id: encoding ~18 kB of capabilities costs ms."""
        key = (which, *self.engine.loaded_models())
        if key not in self._frames:
            hello = self.engine.hello()
            if len(self._frames) > 64:
                self._frames.clear()
            self._frames[key] = encode(hello if which == "hello" else {
                "type": "result", "value": {k: v for k, v in hello.items() if k != "type"}})
        return self._frames[key]

    async def _serve(self, reader: asyncio.StreamReader, connection: Connection) -> None:
        while not connection.closed:
            if not connection.room.is_set():
                await connection.room.wait()  # backpressure: its replies are piling up unread
                continue
            try:
                header = await read_frame(reader, protocol.MAX_FRAME_BYTES)
            except protocol.ProtocolError as e:
                request_id = e.request_id if _valid_id(e.request_id) else None
                connection.send(protocol.error_header(request_id, e.code, e.message))
                if e.fatal:
                    return
                continue
            self._dispatch(header, connection)
            await asyncio.sleep(0)  # one frame per turn: a client that pipelines takes turns with the others

    def _dispatch(self, header: dict, connection: Connection) -> None:
        kind, request_id = header["type"], header.get("id")
        if request_id is not None and not _valid_id(request_id):
            connection.send(protocol.error_header(None, protocol.BAD_MESSAGE,
                                                  "'id' must be an integer or a string of at most 64 characters"))
            return
        if kind == "cancel":
            job_id = connection.requests.get(request_id)
            if job_id:
                self.engine.scheduler.cancel(job_id)
            return  # a request that already finished has had its one reply
        if self.shutting_down:
            connection.send(protocol.error_header(request_id, protocol.SHUTTING_DOWN,
                                                  "the engine is shutting down; connect again once it is back"))
            return
        if kind != "request":
            connection.send(protocol.error_header(request_id, protocol.BAD_MESSAGE,
                                                  f"unknown message type {kind!r}; send 'request' or 'cancel'"))
            return
        if request_id is None:
            connection.send(protocol.error_header(None, protocol.BAD_MESSAGE, "a request needs an 'id'"))
            return
        if request_id in connection.requests:
            connection.send(protocol.error_header(request_id, protocol.BAD_MESSAGE,
                                                  f"request id {request_id!r} is still in use; use a new id"))
            return
        try:
            self._request(header, request_id, connection)
        except JobFailed as e:
            connection.send(protocol.error_header(request_id, e.code, e.message))
        except Exception:
            log.exception("request %r failed", header.get("op"))
            connection.send(protocol.error_header(request_id, protocol.INTERNAL,
                                                  "the engine failed on this request; its log has the details"))

    def _request(self, header: dict, request_id: Any, connection: Connection) -> None:
        op = self.engine.op(header.get("op"))
        params = header.get("params", {})
        if op.inline:
            params = self.engine.check(op, params)
            if op.name == "jobs.watch":
                return self._watch(params["job"], request_id, connection)
            if op.name == "engine.info":
                return connection.send_frame(with_id(self._cached_frame("info"), request_id), is_progress=False)
            if op.name == "jobs.cancel":
                value = self._cancel_job(params["job"], connection)
            else:
                value = op.run(self.engine, None, **params)
            connection.send({"type": "result", "id": request_id, "value": value})
            return
        if len(connection.requests) >= MAX_ACTIVE_REQUESTS:
            raise JobFailed(protocol.BUSY, f"this connection already has {MAX_ACTIVE_REQUESTS} requests running; "
                            "wait for some to finish")
        job = self.engine.submit(op.name, params, owner=connection.id, listener=connection.forward(request_id))
        # Job events reach the connection through the loop, so they all come after this.
        connection.requests[request_id] = job.id
        connection.send({"type": "progress", "id": request_id, "job": job.id, "fraction": 0.0, "message": "queued"})

    def _watch(self, job_id: str, request_id: Any, connection: Connection) -> None:
        job = self.engine.scheduler.jobs.get(job_id)
        if job is None:
            raise JobFailed(protocol.NOT_FOUND, f"no job {job_id!r}; jobs.list shows the jobs")
        connection.send({"type": "progress", "id": request_id, "job": job.id, "fraction": job.fraction,
                         "message": job.message})
        stream = self.streams.get(job.id)
        if stream is None:
            stream = self.streams[job.id] = JobStream(self, job)
            stream.watchers[(connection, request_id)] = None
            job.add_listener(stream.on_event)  # a finished job answers at once, through the loop
        else:
            stream.watchers[(connection, request_id)] = None
        connection.watches.append((stream, request_id))

    def _cancel_job(self, job_id: str, connection: Connection) -> dict:
        job = self.engine.scheduler.jobs.get(job_id)
        if job is None:
            raise JobFailed(protocol.NOT_FOUND, f"no job {job_id!r}; jobs.list shows the jobs")
        if not job.detached and job.owner != connection.id:
            raise JobFailed(protocol.BAD_PARAMS, f"job {job_id} belongs to another client and is not detached")
        return {"job": job_id, "cancelled": self.engine.scheduler.cancel(job_id)}

    def _drop_jobs(self, connection: Connection) -> None:
        """A client that leaves takes its jobs with it, except detached ones."""
        connection.closed = True
        self.engine.close_sessions(connection.id)
        for stream, request_id in connection.watches:
            stream.remove(connection, request_id)
        for job in list(self.engine.scheduler.jobs.values()):
            if job.owner == connection.id and job.outcome is None and not job.detached:
                self.engine.scheduler.cancel(job.id)


def encode(header: dict) -> bytes:
    """The frame for a header. An error message is cut to MAX_ERROR_MESSAGE characters (the log has it whole)."""
    message = header.get("message") if header["type"] == "error" else None
    if isinstance(message, str) and len(message) > MAX_ERROR_MESSAGE:
        log.info("error %s for request %r, cut for the client: %s", header.get("code"), header.get("id"), message)
        header = {**header, "message": message[:MAX_ERROR_MESSAGE] + " ... (cut; the engine log has all of it)"}
    try:
        return protocol.encode_frame(header)
    except (TypeError, ValueError) as e:  # a value that cannot travel is the op's bug, not the client's
        log.exception("cannot encode a reply")
        return protocol.encode_frame(protocol.error_header(
            header.get("id"), protocol.INTERNAL, f"the engine could not encode its reply ({e})"))


def with_id(frame: bytes, request_id: Any) -> bytes:
    """A frame encoded once, its header without an "id", for one request: the header gains the id up front."""
    body_length, header_length = protocol.PREFIX.unpack_from(frame)
    head = b'{"id":' + json.dumps(request_id).encode() + b","
    grown = len(head) - 1  # it replaces the header's opening brace
    return protocol.PREFIX.pack(body_length + grown, header_length + grown) + head + frame[protocol.PREFIX.size + 1:]


def _valid_id(request_id: Any) -> bool:
    if isinstance(request_id, bool):
        return False
    return isinstance(request_id, int) and abs(request_id) < 2**53 or isinstance(request_id, str) and len(request_id) <= 64


async def read_frame(reader: asyncio.StreamReader, limit: int) -> dict:
    prefix = await reader.readexactly(protocol.PREFIX.size)
    header_length, attachments_length = protocol.split_prefix(prefix, limit)
    head = await reader.readexactly(header_length)
    attachments = await reader.readexactly(attachments_length) if attachments_length else b""
    return protocol.decode_body(head, attachments)


async def serve(engine: Engine, token: str, host: str, port: int, ready=None, stop: asyncio.Event | None = None,
                max_connections: int = MAX_CONNECTIONS, tls: ssl.SSLContext | None = None) -> bool:
    """Serve until `stop` is set, then shut down gracefully; `ready(host, port)` is called once the socket listens.

    Returns False when a job did not stop in time.
    """
    server = Server(engine, token, max_connections)
    asyncio.get_running_loop().set_exception_handler(server.throttle.loop_errors)
    listener = await asyncio.start_server(server.handle, host, port, limit=1 << 20, ssl=tls,
                                          ssl_handshake_timeout=HELLO_TIMEOUT_S if tls else None)
    bound = listener.sockets[0].getsockname()
    if ready:
        ready(bound[0], bound[1])
    await (stop or asyncio.Event()).wait()
    return await server.shut_down(listener)
