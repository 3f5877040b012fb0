"""Where Atelier keeps its state, models and the engine token. Standard library only."""
from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 47960
TLS_SCHEME = "tls://"  # an engine address written tls://HOST:PORT is spoken to over TLS


def state_dir() -> Path:
    """Token and engine address live here (ATELIER_STATE_DIR, else the XDG state dir)."""
    if os.environ.get("ATELIER_STATE_DIR"):
        return Path(os.environ["ATELIER_STATE_DIR"])
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "Atelier" / "state"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "atelier"


def models_dir() -> Path:
    """Trained models live here (ATELIER_MODELS_DIR, else the XDG data dir)."""
    if os.environ.get("ATELIER_MODELS_DIR"):
        return Path(os.environ["ATELIER_MODELS_DIR"])
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "Atelier" / "models"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "atelier" / "models"


def token_path() -> Path:
    return state_dir() / "token"


def engine_address_path(state: Path | None = None) -> Path:
    """The file in which `atelier serve` records where it listens, while it runs."""
    return (state or state_dir()) / "engine.json"


@dataclass(frozen=True)
class RecordedEngine:
    """What `atelier serve` recorded in engine.json about itself."""

    host: str
    port: int
    token_file: Path | None = None
    pid: int | None = None
    tls: bool = False
    tls_cert: Path | None = None  # the engine's own certificate, which its clients pin

    @property
    def address(self) -> str:
        return f"{TLS_SCHEME if self.tls else ''}{self.host}:{self.port}"


def running_engine(state: Path | None = None) -> RecordedEngine | None:
    """The engine recorded in engine.json, or None when there is none or the file cannot be read.

    The record can be stale (an engine killed with SIGKILL leaves it): connecting tells.
    """
    try:
        info = json.loads(engine_address_path(state).read_text())
        host, port, pid = info["host"], int(info["port"]), info.get("pid")
        if not isinstance(host, str) or not host:
            return None
        token_file, tls_cert = info.get("token_file"), info.get("tls_cert")
        return RecordedEngine(host, port, Path(token_file) if token_file else None, int(pid) if pid else None,
                              info.get("tls") is True, Path(tls_cert) if tls_cert else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


TOKEN_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
TOKEN_LENGTHS = range(32, 257)  # secrets.token_urlsafe(32) gives 43 characters


def token_problem(token: str) -> str | None:
    """Why `token` cannot be the engine's token (empty, too short or long, odd characters), or None."""
    if not token:
        return "it is empty"
    if len(token) not in TOKEN_LENGTHS:
        return f"it has {len(token)} characters, not {TOKEN_LENGTHS.start}-{TOKEN_LENGTHS.stop - 1}"
    if not set(token) <= TOKEN_ALPHABET:
        return "it has characters other than letters, digits, '-' and '_'"
    return None


def read_token(path: Path | None = None) -> str:
    """The engine's token from its file; an empty or malformed file is an error, never a token."""
    path = path or token_path()
    try:
        token = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"no engine token at {path}; start the engine once with `atelier serve` "
                                "(it creates the token) or pass the token file explicitly") from None
    problem = token_problem(token)
    if problem:
        raise ValueError(f"the engine token file {path} is not usable ({problem}); start the engine with "
                         "`atelier serve`, which replaces it with a fresh token")
    return token


def ensure_token(path: Path | None = None) -> str:
    """The engine's token: created on first start (0600), replaced when the file is empty or malformed.

    Written to a temp file, fsynced and then linked (first start) or renamed (replacement) into
    place, so a full disk or a crash never leaves a partial token that a later start would accept.
    """
    path = path or token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _ in range(3):
        try:
            return read_token(path)
        except FileNotFoundError:
            if _write_token(path, replace=False):
                return read_token(path)
        except ValueError as e:
            logging.getLogger("atelier.paths").warning("%s: writing a fresh token", e)
            _write_token(path, replace=True)
    return read_token(path)


def _write_token(path: Path, replace: bool) -> bool:
    """Write a fresh token; without `replace`, only if no file exists (returns False if one appeared)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic create-if-absent: two engines starting at once agree
            except FileExistsError:
                return False
        _fsync_folder(path.parent)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
