"""Raw-socket helpers for sending what a well-behaved client never would."""
from __future__ import annotations

import socket

from engine import protocol


class RawConnection:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_header(self, header: dict) -> None:
        self.send(protocol.encode_frame(header))

    def hello(self, token: str | None, version: int = protocol.PROTOCOL_VERSION) -> dict:
        header = {"type": "hello", "protocol": version, "client": "raw-test"}
        if token is not None:
            header["token"] = token
        self.send_header(header)
        return self.read()

    def read(self) -> dict:
        return protocol.read_frame(self.reader)

    def read_until_final(self, request_id) -> tuple[list[dict], dict]:
        """Progress events for a request, then its one result or error."""
        progress = []
        while True:
            frame = self.read()
            if frame.get("id") != request_id:
                continue
            if frame["type"] == "progress":
                progress.append(frame)
            else:
                return progress, frame

    def is_closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
