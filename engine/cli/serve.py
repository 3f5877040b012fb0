"""`atelier serve`: run the engine until interrupted."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path

from engine import __version__, paths
from engine.store.atomic import write_atomic

log = logging.getLogger("atelier.serve")
FD_RESERVE = 100  # file descriptors kept for model files, logs and torch beside the connections


@dataclass
class Exposure:
    """Who may reach the engine and what it lets them read: serve's network and file flags."""

    host: str = paths.DEFAULT_HOST
    allow_paths: list[Path] = field(default_factory=list)
    max_connections: int = 1024
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False


def run(port: int, device: str, models_dir: Path, token_file: Path | None, as_json: bool,
        exposure: Exposure | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    exposure = exposure or Exposure()
    host = exposure.host
    try:
        tls = _check_exposure(exposure)
    except ValueError as e:
        print(f"atelier serve: {e}", file=sys.stderr)
        return 2
    from engine.server.core import Engine
    from engine.server.server import serve

    token_file = token_file or paths.token_path()
    token = paths.ensure_token(token_file)
    engine = Engine(models_dir, device, allowed_paths=[models_dir, *exposure.allow_paths])
    address_file = paths.engine_address_path()
    max_connections = _room_for(exposure.max_connections)

    def ready(bound_host: str, bound_port: int) -> None:
        info = {"ready": True, "host": bound_host, "port": bound_port, "pid": os.getpid(), "engine": __version__,
                "device": str(engine.device), "token_file": str(token_file), "models_dir": str(models_dir)}
        if tls:
            info.update(tls=True, tls_cert=str(exposure.tls_cert.resolve()))
        write_atomic(address_file, json.dumps(info).encode())
        if as_json:
            print(json.dumps(info), flush=True)
        else:
            print(f"Atelier engine {__version__} ready on {'tls://' if tls else ''}{bound_host}:{bound_port} "
                  f"(device {engine.device}); clients read the token from {token_file}", flush=True)

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, _on_signal, signum, stop, address_file)
            except NotImplementedError:  # Windows: Ctrl-C ends asyncio.run; engine.close() still stops the jobs
                pass
        return await serve(engine, token, host, port, ready, stop, max_connections, tls)

    # A waiting thread asks for the GIL after the switch interval: with the default 5 ms, every
    # ping beside a job running Python took two of them (p50 10.5 ms beside a small music model;
    # 1.2 ms at 1 ms, the job no slower; bench/engine_bench.py).
    sys.setswitchinterval(0.001)
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


def _check_exposure(exposure: Exposure) -> ssl.SSLContext | None:
    """The TLS context to serve with (None: plain TCP); ValueError says what is missing."""
    for folder in exposure.allow_paths:
        if not folder.is_dir():
            raise ValueError(f"--allow-path {folder}: no such folder")
    if exposure.max_connections < 1:
        raise ValueError(f"--max-connections must be at least 1, got {exposure.max_connections}")
    if bool(exposure.tls_cert) != bool(exposure.tls_key):
        raise ValueError("TLS needs both --tls-cert FILE and --tls-key FILE")
    if not _is_loopback(exposure.host):
        print(f"atelier serve: WARNING: --host {exposure.host} exposes the engine to your network; anyone who can "
              "reach the port and holds the token can use it", file=sys.stderr)
        if not exposure.tls_cert and not exposure.insecure:
            raise ValueError(f"--host {exposure.host} without TLS would send the token in clear text: give "
                             "--tls-cert FILE --tls-key FILE (docs/SECURITY.md shows how to make them), or "
                             "--insecure on a network you trust")
    if not exposure.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(exposure.tls_cert, exposure.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot use --tls-cert {exposure.tls_cert} with --tls-key {exposure.tls_key}: {e}") from None
    return context


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def _room_for(connections: int) -> int:
    """Raise the open-file limit to fit `connections`; where it cannot, serve fewer (running out breaks accept)."""
    try:
        import resource
    except ImportError:  # Windows
        return connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitting = max(1, soft - FD_RESERVE)
        log.warning("the open-file limit is %d: serving at most %d connections, not %d (raise it with ulimit -n)",
                    soft, fitting, connections)
        return fitting
    return connections


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
