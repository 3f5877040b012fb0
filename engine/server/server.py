"""The socket server: connections, the handshake, framing and routing. No compute here.

Each connection has its own reader and its own writer task, so a slow or stalled client
only ever waits on itself. Job events reach a connection from worker threads through
`loop.call_soon_threadsafe`; when a client falls behind, its progress events are dropped
(never its results).
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
from typing import Any

from engine import protocol
from engine.ops import JobFailed
from engine.server.core import Engine

log = logging.getLogger("atelier.server")

HELLO_TIMEOUT_S = 10.0
SHUTDOWN_JOBS_S = 30.0  # how long a shutdown waits for running jobs (training saves a checkpoint)
SHUTDOWN_FLUSH_S = 2.0  # how long it then gives each client to take its last replies
MAX_ACTIVE_REQUESTS = 64
MAX_QUEUED_PROGRESS = 16
_connection_ids = itertools.count(1)


class Connection:
    def __init__(self, server: "Server", writer: asyncio.StreamWriter):
        self.id = next(_connection_ids)
        self.server = server
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[tuple[bytes, bool] | None] = asyncio.Queue()
        self.queued_progress = 0
        self.requests: dict[Any, str] = {}  # request id -> job id, while the job runs
        self.watches: list[tuple[Any, Any]] = []  # (job, listener) of jobs.watch requests
        self.closed = False
        self.writer_task: asyncio.Task | None = None

    def send(self, header: dict) -> None:
        """Queue a frame; call on the loop thread."""
        self._enqueue(protocol.encode_frame(header), header["type"] == "progress")

    def send_threadsafe(self, header: dict, finishes: Any = None) -> None:
        """Queue a frame from any thread; arrays are encoded here, off the loop.

        `finishes` names the request this frame completes; it is forgotten on the loop thread.
        """
        try:
            frame = protocol.encode_frame(header)
        except (TypeError, ValueError) as e:  # a value that cannot travel is the op's bug, not the client's
            log.exception("cannot encode a reply")
            frame = protocol.encode_frame(protocol.error_header(
                header.get("id"), protocol.INTERNAL, f"the engine could not encode its reply ({e})"))
        if not self.closed:
            try:
                self.loop.call_soon_threadsafe(self._deliver, frame, header["type"] == "progress", finishes)
            except RuntimeError:  # the loop has shut down with the engine
                pass

    def _deliver(self, frame: bytes, is_progress: bool, finishes: Any) -> None:
        if finishes is not None:
            self.requests.pop(finishes, None)
        self._enqueue(frame, is_progress)

    def _enqueue(self, frame: bytes, is_progress: bool) -> None:
        if self.closed:
            return
        if is_progress:
            if self.queued_progress >= MAX_QUEUED_PROGRESS:
                return
            self.queued_progress += 1
        self.outbox.put_nowait((frame, is_progress))

    async def write_loop(self) -> None:
        try:
            while (item := await self.outbox.get()) is not None:
                frame, is_progress = item
                if is_progress:
                    self.queued_progress -= 1
                self.writer.write(frame)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self.writer.close()

    def forward(self, request_id: Any):
        """A job listener that relabels the job's events with this connection's request id."""
        def listener(event: dict) -> None:
            finished = event["type"] != "progress"
            self.send_threadsafe({**event, "id": request_id}, finishes=request_id if finished else None)
        return listener


class Server:
    def __init__(self, engine: Engine, token: str):
        self.engine = engine
        self.token = token
        self.connections: set[Connection] = set()
        self.shutting_down = False

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
            self.connections.discard(connection)
            self._drop_jobs(connection)
            connection.outbox.put_nowait(None)
            await writer_task

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
        connection.send(self.engine.hello())
        return True

    async def _serve(self, reader: asyncio.StreamReader, connection: Connection) -> None:
        while not connection.closed:
            try:
                header = await read_frame(reader, protocol.MAX_FRAME_BYTES)
            except protocol.ProtocolError as e:
                connection.send(protocol.error_header(None, e.code, e.message))
                if e.fatal:
                    return
                continue
            self._dispatch(header, connection)

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
            params = op.check(params)
            if op.name == "jobs.watch":
                return self._watch(params["job"], request_id, connection)
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
        listener = connection.forward(request_id)
        connection.watches.append((job, listener))
        job.add_listener(listener)

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
        for job, listener in connection.watches:
            job.remove_listener(listener)
        for job in list(self.engine.scheduler.jobs.values()):
            if job.owner == connection.id and job.outcome is None and not job.detached:
                self.engine.scheduler.cancel(job.id)


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


async def serve(engine: Engine, token: str, host: str, port: int, ready=None,
                stop: asyncio.Event | None = None) -> bool:
    """Serve until `stop` is set, then shut down gracefully; `ready(host, port)` is called once the socket listens.

    Returns False when a job did not stop in time.
    """
    server = Server(engine, token)
    listener = await asyncio.start_server(server.handle, host, port, limit=1 << 20)
    bound = listener.sockets[0].getsockname()
    if ready:
        ready(bound[0], bound[1])
    await (stop or asyncio.Event()).wait()
    return await server.shut_down(listener)
