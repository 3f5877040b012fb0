"""The model store: each model one safetensors file whose header carries its JSON metadata.

One file per model makes every save a single atomic rename, so a crash mid-save leaves the
previous version intact. Loading never runs pickled code (safetensors holds only tensors),
and a content hash over the tensors catches files damaged after they were written.
Models that ship with Atelier live read-only in `engine/weights/`; a user's model of the
same name takes precedence.

Training artefacts (resume state, loss log, loss curve, sample sheets) live in
`<models dir>/<name>.run/`.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from engine.store.atomic import remove_stale_temps, write_atomic

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "weights"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModelNotFound(LookupError):
    pass


class ModelCorrupt(ValueError):
    pass


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name.endswith(".run"):
        raise ValueError(f"bad model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit")
    return name


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> dict[str, Any]:
    """Atomically write tensors and metadata; returns the metadata as stored (with its hash)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {**metadata, "format": FORMAT_VERSION, "content_hash": content_hash(tensors)}
    write_atomic(path, save_bytes(tensors, {"atelier": json.dumps(metadata)}))
    return metadata


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("atelier")
        metadata = json.loads(raw) if raw else None
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ModelCorrupt(f"{path} is not a readable model file ({e}); delete it or restore it from a backup") from None
    if not isinstance(metadata, dict):
        raise ModelCorrupt(f"{path} has no Atelier metadata; it was not written by Atelier")
    return metadata


def load_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    metadata = read_metadata(path)
    try:
        tensors = load_bytes(path.read_bytes())
    except Exception as e:
        raise ModelCorrupt(f"{path} is damaged ({e}); delete it or restore it from a backup") from None
    if content_hash(tensors) != metadata.get("content_hash"):
        raise ModelCorrupt(f"{path} does not match its content hash: the file was damaged after it was written; "
                           "delete it, restore it from a backup or train again")
    return metadata, tensors


class ModelStore:
    def __init__(self, root: Path, builtin: Path | None = BUILTIN_DIR):
        self.root = Path(root)
        self.builtin = builtin
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.root)

    def path(self, name: str) -> Path:
        """Where a model is read from: the user's copy, else the built-in one."""
        user = self.root / (check_name(name) + SUFFIX)
        if user.exists() or self.builtin is None:
            return user
        shipped = self.builtin / (name + SUFFIX)
        return shipped if shipped.exists() else user

    def is_builtin(self, name: str) -> bool:
        return self.builtin is not None and self.path(name).parent == self.builtin

    def names(self) -> list[str]:
        folders = [self.root] + ([self.builtin] if self.builtin and self.builtin.is_dir() else [])
        return sorted({p.name[:-len(SUFFIX)] for folder in folders for p in folder.glob("*" + SUFFIX)
                       if NAME_PATTERN.match(p.name[:-len(SUFFIX)])})

    def list(self) -> list[dict[str, Any]]:
        """A summary of every model; a damaged one is listed with its error instead of failing the list."""
        entries = []
        for name in self.names():
            entry: dict[str, Any] = {"name": name, "builtin": self.is_builtin(name)}
            try:
                metadata = self.metadata(name)
                entry.update({k: metadata.get(k) for k in ("kind", "created", "step", "metrics", "content_hash")})
            except ModelCorrupt as e:
                entry["error"] = str(e)
            entries.append(entry)
        return entries

    def metadata(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        if not path.exists():
            raise ModelNotFound(self._missing(name))
        return read_metadata(path)

    def load(self, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        path = self.path(name)
        if not path.exists():
            raise ModelNotFound(self._missing(name))
        return load_file(path)

    def save(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> dict[str, Any]:
        metadata = {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **metadata}
        return save_file(self.root / (check_name(name) + SUFFIX), tensors, metadata)

    def delete(self, name: str) -> None:
        path = self.root / (check_name(name) + SUFFIX)
        if not path.exists():
            if self.is_builtin(name):
                raise PermissionError(f"{name!r} ships with Atelier and cannot be deleted")
            raise ModelNotFound(self._missing(name))
        path.unlink()
        shutil.rmtree(self.run_dir(name), ignore_errors=True)

    def run_dir(self, name: str) -> Path:
        """Training artefacts of a model: resume state, loss log and curve, sample sheets."""
        return self.root / (check_name(name) + ".run")

    def _missing(self, name: str) -> str:
        known = ", ".join(self.names()) or "none yet"
        return f"no model named {name!r} (models: {known}); train one with `atelier train KIND --name {name}`"
