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

log = logging.getLogger("atelier.serve")


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

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, _on_signal, signum, stop, address_file)
            except NotImplementedError:  # Windows: Ctrl-C ends asyncio.run; engine.close() still stops the jobs
                pass
        return await serve(engine, token, host, port, ready, stop)

    stopped_cleanly = None  # None: the server never got to its own shutdown
    try:
        stopped_cleanly = asyncio.run(main())
    except OSError as e:
        print(f"atelier serve: cannot listen on {host}:{port} ({e.strerror}); is another engine running? "
              "Choose another port with --port", file=sys.stderr)
        return 1
    finally:
        if stopped_cleanly is None:
            engine.close()
        address_file.unlink(missing_ok=True)
    if not stopped_cleanly:
        # A job thread still runs torch: a normal interpreter exit would abort under it.
        logging.shutdown()
        os._exit(1)
    log.info("stopped")
    return 0


def _on_signal(signum: int, stop: asyncio.Event, address_file: Path) -> None:
    name = signal.Signals(signum).name
    if stop.is_set():
        log.warning("%s again: exiting at once; running jobs are lost", name)
        address_file.unlink(missing_ok=True)
        logging.shutdown()
        os._exit(128 + signum)
    log.info("%s: shutting down; running training saves a checkpoint first (send %s again to exit at once)",
             name, name)
    stop.set()
