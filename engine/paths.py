"""Where Atelier keeps its state, models and the engine token. Standard library only."""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 47960


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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def running_engine(state: Path | None = None) -> RecordedEngine | None:
    """The engine recorded in engine.json, or None when there is none or the file cannot be read.

    The record can be stale (an engine killed with SIGKILL leaves it): connecting tells.
    """
    try:
        info = json.loads(engine_address_path(state).read_text())
        host, port, pid = info["host"], int(info["port"]), info.get("pid")
        if not isinstance(host, str) or not host:
            return None
        token_file = info.get("token_file")
        return RecordedEngine(host, port, Path(token_file) if token_file else None, int(pid) if pid else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_token(path: Path | None = None) -> str:
    path = path or token_path()
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"no engine token at {path}; start the engine once with `atelier serve` "
                                "(it creates the token) or pass the token file explicitly") from None


def ensure_token(path: Path | None = None) -> str:
    """Return the token, creating it with 0600 permissions on first start."""
    path = path or token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return read_token(path)
