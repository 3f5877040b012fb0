"""Where Atelier keeps its state, models and the engine token. Standard library only."""
from __future__ import annotations

import os
import secrets
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
