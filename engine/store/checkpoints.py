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
import logging
import math
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

log = logging.getLogger("atelier.store")
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "weights"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A model's metadata must fit a reply (models.info) with room to spare; shipped models use under 8 KiB.
MAX_METADATA_BYTES = 256 << 10
MAX_METADATA_DEPTH = 16  # replies may nest 32 deep; the reply's envelope takes a few levels
MAX_LISTED_BYTES = 4 << 10  # per listed field (metrics): a listing of hundreds of models fits a reply
LISTED = ("kind", "created", "step", "metrics", "content_hash", "partial")


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


def save_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any],
              max_metadata_bytes: int | None = None) -> dict[str, Any]:
    """Atomically write tensors and metadata; returns the metadata as stored (with its hash).

    Non-finite numbers in the metadata are stored as null (JSON has no NaN). Metadata nested
    deeper than MAX_METADATA_DEPTH, or over `max_metadata_bytes`, raises ValueError.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = _finite({**metadata, "format": FORMAT_VERSION, "content_hash": content_hash(tensors)})
    if json_depth(metadata) > MAX_METADATA_DEPTH:
        raise ValueError(f"cannot save {path.name}: its metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    text = json.dumps(metadata, allow_nan=False)
    if max_metadata_bytes is not None and len(text.encode()) > max_metadata_bytes:
        raise ValueError(f"cannot save {path.name}: its metadata takes {len(text.encode())} bytes, over the limit of "
                         f"{max_metadata_bytes}; keep large data (logs, samples) in the run folder")
    write_atomic(path, save_bytes(tensors, {"atelier": text}))
    return metadata


def read_metadata(path: Path, max_bytes: int | None = None) -> dict[str, Any]:
    """A file's metadata; non-finite numbers read as None. Raises ModelCorrupt for anything unusable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("atelier")
        if raw and max_bytes is not None and len(raw.encode()) > max_bytes:
            raise ModelCorrupt(f"{path} has {len(raw.encode())} bytes of metadata, over the limit of {max_bytes}; "
                               "it was not written by Atelier: delete it")
        metadata = json.loads(raw, parse_constant=lambda _: None) if raw else None
    except (FileNotFoundError, ModelCorrupt):
        raise
    except RecursionError:
        raise ModelCorrupt(f"{path} has metadata nested too deep to read; it was not written by Atelier: "
                           "delete it") from None
    except Exception as e:
        raise ModelCorrupt(f"{path} is not a readable model file ({e}); delete it or restore it from a backup") from None
    if not isinstance(metadata, dict):
        raise ModelCorrupt(f"{path} has no Atelier metadata; it was not written by Atelier")
    if json_depth(metadata) > MAX_METADATA_DEPTH:
        raise ModelCorrupt(f"{path} has metadata nested deeper than {MAX_METADATA_DEPTH} levels; it was not "
                           "written by Atelier: delete it")
    return metadata


def json_depth(value: Any) -> int:
    """How deep dicts and lists nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _finite(value: Any, depth: int = 0) -> Any:
    """A copy with every non-finite float replaced by None (stops at the depth limit; save refuses deeper)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > MAX_METADATA_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, depth + 1) for v in value]
    return value


def load_file(path: Path, max_metadata_bytes: int | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    metadata = read_metadata(path, max_metadata_bytes)
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
        for folder in [self.root, *self.root.glob("*.run")]:  # saves of models and of resume states
            for removed in remove_stale_temps(folder):
                log.info("removed %s, left by a save that was interrupted", removed)

    def path(self, name: str) -> Path:
        """Where a model is read from: the user's copy, else the built-in one."""
        user = self.root / (check_name(name) + SUFFIX)
        if user.exists() or self.builtin is None:
            return user
        shipped = self.builtin / (name + SUFFIX)
        return shipped if shipped.exists() else user

    def is_builtin(self, name: str) -> bool:
        return self.builtin is not None and self.path(name).parent == self.builtin

    def _files(self) -> list[Path]:
        folders = [self.root] + ([self.builtin] if self.builtin and self.builtin.is_dir() else [])
        return [p for folder in folders for p in folder.glob("*" + SUFFIX)]

    def names(self) -> list[str]:
        return sorted({p.name[:-len(SUFFIX)] for p in self._files() if _valid_name(p.name[:-len(SUFFIX)])})

    def list(self) -> list[dict[str, Any]]:
        """A summary of every model file. One that cannot be used (damaged, crafted, badly named) is
        listed with its error instead of failing the list."""
        entries = []
        for name in self.names():
            entry: dict[str, Any] = {"name": name, "builtin": self.is_builtin(name)}
            try:
                entry.update(_listed(self.metadata(name)))
            except Exception as e:  # a listing survives any file
                entry["error"] = str(e) if isinstance(e, (ModelCorrupt, ModelNotFound)) else \
                    f"{self.path(name)} cannot be read ({type(e).__name__}: {e})"
            entries.append(entry)
        for path in sorted(self._files()):
            stem = path.name[:-len(SUFFIX)]
            if not _valid_name(stem):
                entries.append({"name": stem[:80], "builtin": path.parent == self.builtin,
                                "error": f"{str(path)[:300]} is not named as a model (1-64 letters, digits, '.', "
                                         "'_' or '-', not ending in '.run'); rename or delete it"})
        return entries

    def metadata(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        if not path.exists():
            raise ModelNotFound(self._missing(name))
        return read_metadata(path, MAX_METADATA_BYTES)

    def tensor_shapes(self, name: str) -> dict[str, list[int]]:
        """Each stored tensor's shape, from the file's header: what loading will allocate."""
        path = self.path(name)
        if not path.exists():
            raise ModelNotFound(self._missing(name))
        try:
            with safe_open(str(path), framework="pt") as f:
                return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
        except Exception as e:
            raise ModelCorrupt(f"{path} is not a readable model file ({e}); delete it or restore it from a "
                               "backup") from None

    def load(self, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        path = self.path(name)
        if not path.exists():
            raise ModelNotFound(self._missing(name))
        return load_file(path, MAX_METADATA_BYTES)

    def save(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> dict[str, Any]:
        metadata = {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **metadata}
        return save_file(self.root / (check_name(name) + SUFFIX), tensors, metadata, MAX_METADATA_BYTES)

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


def _valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name)) and not name.endswith(".run")


def _listed(metadata: dict[str, Any]) -> dict[str, Any]:
    """The summary fields of a model, each small enough that a listing of many models fits one reply."""
    entry = {k: metadata.get(k) for k in LISTED}
    for key, value in entry.items():
        size = len(json.dumps(value, allow_nan=False))
        if size > MAX_LISTED_BYTES:
            raise ModelCorrupt(f"its {key!r} takes {size} bytes, over the listing's limit of {MAX_LISTED_BYTES}; "
                               "it was not written by Atelier: delete it")
    entry["partial"] = bool(entry["partial"])  # saved by a run that did not finish: kept for resume, never a default
    return entry
