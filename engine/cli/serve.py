"""`atelier serve`: run the engine until interrupted."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from engine import __version__, paths
from engine.store.atomic import write_atomic


def run(host: str, port: int, device: str, models_dir: Path, token_file: Path | None, as_json: bool) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from engine.server.core import Engine
    from engine.server.server import serve

    token_file = token_file or paths.token_path()
    token = paths.ensure_token(token_file)
    engine = Engine(models_dir, device)
    address_file = paths.engine_address_path()

    def ready(bound_host: str, bound_port: int) -> None:
        info = {"ready": True, "host": bound_host, "port": bound_port, "pid": os.getpid(), "engine": __version__,
                "device": str(engine.device), "token_file": str(token_file), "models_dir": str(models_dir)}
        write_atomic(address_file, json.dumps(info).encode())
        if as_json:
            print(json.dumps(info), flush=True)
        else:
            print(f"Atelier engine {__version__} ready on {bound_host}:{bound_port} (device {engine.device}); "
                  f"clients read the token from {token_file}", flush=True)

    async def main() -> None:
        task = asyncio.create_task(serve(engine, token, host, port, ready))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, task.cancel)
            except NotImplementedError:  # Windows: Ctrl-C still ends asyncio.run
                pass
        try:
            await task
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(main())
    except OSError as e:
        print(f"atelier serve: cannot listen on {host}:{port} ({e.strerror}); is another engine running? "
              "Choose another port with --port", file=sys.stderr)
        return 1
    finally:
        engine.close()
        address_file.unlink(missing_ok=True)
    return 0
