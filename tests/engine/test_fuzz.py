"""Ten thousand malformed frames against a live engine: it answers each well, and stays up."""
import json
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import protocol
from support.wire import RawConnection

KNOWN_CODES = {protocol.BAD_FRAME, protocol.FRAME_TOO_LARGE, protocol.BAD_MESSAGE, protocol.UNKNOWN_OP,
               protocol.BAD_PARAMS, protocol.NOT_FOUND, protocol.BUSY, protocol.CANCELLED, protocol.UNSUPPORTED}
# Ops whose valid calls are quick; long ones (training, benchmarks) would only slow the fuzzing down.
QUICK_OPS = ["ping", "engine.info", "models.list", "models.info", "models.load", "models.unload", "jobs.list",
             "jobs.cancel", "jobs.watch", "models.delete"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def frame_of(head: bytes, attachments: bytes = b"") -> bytes:
    return struct.pack(">II", 4 + len(head) + len(attachments), len(head)) + head + attachments


@st.composite
def malformed(draw):
    choice = draw(st.integers(0, 7))
    if choice == 0:  # noise
        return draw(st.binary(min_size=1, max_size=64)), True
    if choice == 1:  # a plausible prefix over a random header
        return frame_of(draw(st.binary(max_size=64))), False
    if choice == 2:  # JSON that is not a message
        return frame_of(json.dumps(draw(json_values)).encode()), False
    if choice == 3:  # requests with random ops, ids and params
        header = {"type": draw(st.sampled_from(["request", "cancel", "hello", "result", "x"])),
                  "id": draw(st.one_of(st.integers(-2**60, 2**60), st.text(max_size=70), st.none(), json_values)),
                  "op": draw(st.one_of(st.sampled_from(QUICK_OPS), st.text(max_size=12), json_values)),
                  "params": draw(st.one_of(st.dictionaries(st.sampled_from(["name", "job", "seconds", "x"]),
                                                           json_values, max_size=3), json_values))}
        return frame_of(json.dumps(header).encode()), False
    if choice == 4:  # array descriptors that lie about their bytes
        arrays = draw(st.lists(st.fixed_dictionaries({
            "dtype": st.sampled_from(["uint8", "float32", "int64", "complex64", "nope"]),
            "shape": st.lists(st.integers(-3, 9), max_size=3)}), max_size=3))
        head = json.dumps({"type": "request", "id": 1, "op": "ping", "arrays": arrays}).encode()
        return frame_of(head, draw(st.binary(max_size=64))), False
    if choice == 5:  # lengths that contradict each other
        body, header = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
        return struct.pack(">II", body, header) + draw(st.binary(max_size=16)), True
    if choice == 6:  # deep nesting
        depth = draw(st.integers(30, 3000))
        return frame_of(b'{"type":"request","id":1,"op":"ping","params":' + b"[" * depth + b"]" * depth + b"}"), False
    # a frame cut short, then the client hangs up
    whole = protocol.encode_frame({"type": "request", "id": 1, "op": "ping"})
    return whole[:draw(st.integers(1, len(whole) - 1))], True


class Fuzzer:
    def __init__(self, engine):
        self.engine = engine
        self.connection = None
        self.sent = 0

    def connect(self) -> RawConnection:
        if self.connection is None:
            self.connection = RawConnection(self.engine.host, self.engine.port, timeout=20)
            assert self.connection.hello(self.engine.token)["type"] == "hello"
        return self.connection

    def reset(self) -> None:
        if self.connection:
            self.connection.close()
        self.connection = None

    def send(self, data: bytes, breaks_stream: bool) -> None:
        connection = self.connect()
        self.sent += 1
        connection.send(data)
        if breaks_stream:
            # The stream is out of sync on purpose: whatever comes back must still be well formed.
            connection.sock.shutdown(socket.SHUT_WR)
            self.drain(connection, until_id=None)
            self.reset()
            return
        marker = f"after-{self.sent}"
        connection.send_header({"type": "request", "id": marker, "op": "ping"})
        if not self.drain(connection, until_id=marker):
            self.reset()

    def drain(self, connection: RawConnection, until_id) -> bool:
        """Read replies until `until_id` is answered (True) or the engine closes (False)."""
        while True:
            try:
                frame = connection.read()
            except ConnectionError:
                return False
            assert frame["type"] in ("error", "result", "progress"), frame
            if frame["type"] == "error":
                assert frame["code"] in KNOWN_CODES, frame
                assert isinstance(frame["message"], str) and frame["message"]
                assert "Traceback" not in frame["message"]
            if until_id is not None and frame.get("id") == until_id and frame["type"] == "result":
                return True


def test_ten_thousand_malformed_frames(engine):
    fuzzer = Fuzzer(engine)

    @settings(max_examples=10_000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(malformed())
    def run(case):
        fuzzer.send(*case)

    run()
    fuzzer.reset()
    assert fuzzer.sent >= 10_000
    assert engine.process.poll() is None
    with engine.client("after-fuzz") as client:
        assert client.ping() < 1.0
        assert all(m["builtin"] for m in client.call("models.list")["models"])
