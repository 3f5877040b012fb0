"""One way to run ops for every command: in this process, or on a running engine."""
from __future__ import annotations

import argparse
import json
import threading
from typing import Any, Callable

from engine import paths
from engine.client import Client, EngineError

Progress = Callable[[float, str, Any], None]


RUNNING = "running"  # what `--engine` given alone stands for: the engine recorded in engine.json


def open_session(args: argparse.Namespace) -> "LocalSession | RemoteSession":
    """In this process without --engine, else on the engine it names (alone: the recorded one)."""
    if args.engine == RUNNING:
        use_running_engine(args)
    if args.engine:
        return RemoteSession(args.engine, args.token_file)
    return LocalSession(args.models_dir or paths.models_dir(), args.device)


def use_running_engine(args: argparse.Namespace) -> None:
    """Point args.engine (and args.token_file, unless given) at the engine `atelier serve` recorded."""
    running = paths.running_engine()
    if running is None:
        raise ConnectionError(f"--engine: no running engine is recorded in {paths.engine_address_path()}; "
                              "start one with `atelier serve`, or give its address as --engine HOST:PORT")
    args.engine = running.address
    if args.token_file is None:
        args.token_file = running.token_file


def output(args: argparse.Namespace, value: Any, text: str) -> None:
    """The command's result: JSON with --json, else the text."""
    print(json.dumps(value, default=str, indent=2) if args.json else text)


class LocalSession:
    """Runs ops on an engine inside this process, through the same jobs as the server."""

    def __init__(self, models_dir, device: str):
        from engine.server.core import Engine

        self.engine = Engine(models_dir, device)

    def call(self, op: str, params: dict, progress: Progress | None = None) -> Any:
        from engine.ops import JobFailed

        done = threading.Event()
        outcome: dict = {}

        def listener(event: dict) -> None:
            if event["type"] == "progress":
                if progress:
                    progress(event["fraction"], event["message"], event.get("preview"))
            else:
                outcome.update(event)
                done.set()

        try:
            job = self.engine.submit(op, params, listener=listener)
        except JobFailed as e:
            raise EngineError(e.code, e.message) from None
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.engine.scheduler.cancel(job.id)
            done.wait()  # a cancelled training run saves its checkpoint first
            raise
        if outcome["type"] == "error":
            raise EngineError(outcome["code"], outcome["message"])
        return outcome["value"]

    @property
    def info(self) -> dict:
        return self.engine.hello()

    def close(self) -> None:
        self.engine.close()


class RemoteSession:
    """Runs ops on a running engine over the protocol."""

    def __init__(self, address: str, token_file):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--engine {address!r}: write it as HOST:PORT, e.g. 127.0.0.1:{paths.DEFAULT_PORT}, "
                             "or give --engine alone (after the command's other arguments) for the running engine")
        self.client = Client(host, int(port), token_file=token_file, name="atelier-cli")

    def call(self, op: str, params: dict, progress: Progress | None = None) -> Any:
        request = self.client.submit(op, params, on_progress=progress)
        try:
            return request.result()
        except KeyboardInterrupt:
            request.cancel()
            try:
                request.result(timeout=30)
            except EngineError:
                pass
            raise

    @property
    def info(self) -> dict:
        return self.client.info

    def close(self) -> None:
        self.client.close()
