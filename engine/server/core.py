"""The engine without its sockets: device, model store, loaded models, ops and jobs.

The socket server and the in-process CLI both drive this one object, so a command behaves
the same whether it runs in-process or against a running engine.
"""
from __future__ import annotations

import difflib
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from engine import __version__, protocol
from engine.device import describe, pick_device
from engine.kinds import KIND_MODULES, kind_module
from engine.ops import JobFailed, Op, vet_path
from engine.server import engine_ops
from engine.server.jobs import Job, Scheduler
from engine.server.model_loading import load_model
from engine.store.checkpoints import BUILTIN_DIR, ModelStore

log = logging.getLogger("atelier.engine")
MAX_SESSIONS = 16  # per client: a session holds model state in memory


class Engine:
    """`allowed_paths`: the folders whose files requests may name (a served engine); None trusts every
    path (the in-process CLI, whose user typed them)."""

    def __init__(self, models_dir: Path, device: str = "auto", builtin: Path | None = BUILTIN_DIR,
                 general_workers: int = 2, allowed_paths: list[Path] | None = None):
        self.allowed_paths = None if allowed_paths is None else [os.path.realpath(p) for p in allowed_paths]
        self.device = pick_device(device)
        self.store = ModelStore(models_dir, builtin)
        self.scheduler = Scheduler(general_workers=general_workers)
        self.ops: dict[str, Op] = {op.name: op for op in engine_ops.OPS}
        for kind in KIND_MODULES:
            self.ops.update({op.name: op for op in kind_module(kind).OPS})
        self._loaded: dict[str, tuple[dict, Any]] = {}
        self._load_lock = threading.Lock()
        self._sessions: dict[str, tuple[int | None, Any]] = {}  # id -> (owner, session object)

    def hello(self) -> dict:
        return {"type": "hello", "protocol": protocol.PROTOCOL_VERSION, "engine": __version__,
                "device": describe(self.device), "capabilities": self.capabilities()}

    def capabilities(self) -> dict:
        return {"ops": {name: op.describe() for name, op in sorted(self.ops.items())},
                "kinds": sorted(KIND_MODULES), "models": self.loaded_models()}

    def loaded_models(self) -> list[str]:
        return sorted(self._loaded)

    def op(self, name: Any) -> Op:
        if not isinstance(name, str) or name not in self.ops:
            close = difflib.get_close_matches(str(name), self.ops, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; engine.info lists the ops"
            raise JobFailed(protocol.UNKNOWN_OP, f"unknown op {name!r}{hint}")
        return self.ops[name]

    def submit(self, op_name: str, params: Any, owner: int | None = None,
               listener: Callable[[dict], None] | None = None) -> Job:
        """Check the request and queue it; raises JobFailed for an unknown op or bad params."""
        op = self.op(op_name)
        checked = self.check(op, params)
        detached = bool(checked.pop("detach", False))
        job = Job(op.name, op.priority, lambda context: op.run(self, context, **checked), owner, detached)
        if listener:
            job.add_listener(listener)
        return self.scheduler.submit(job)

    def check(self, op: Op, params: Any) -> dict:
        """The op's params with defaults filled in; on a served engine every path must lie in allowed_paths."""
        if self.allowed_paths is None:
            return op.check(params)
        checked = op.check(params, self._vet_path)
        if op.name == "train":  # its data options are the kind's, checked against the kind's declarations
            try:
                fields = kind_module(checked["kind"]).DATA_PARAMS
            except KeyError:
                return checked  # the op itself says which kinds there are
            data = dict(checked["data"])
            for name, spec in fields.items():
                if spec.path and isinstance(data.get(name), str):
                    data[name] = vet_path(f"train {checked['kind']} data", name, spec, data[name], self._vet_path)
            checked["data"] = data
        return checked

    def _vet_path(self, value: str) -> str:
        try:
            real = os.path.realpath(os.path.expanduser(value))
        except (ValueError, OSError):
            real = ""
        if real and any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.allowed_paths):
            return real
        # Never more: whether it exists, or what the folder holds, is not the client's to learn.
        raise JobFailed(protocol.PATH_NOT_ALLOWED, f"{value!r} is outside the folders this engine reads files "
                        f"from ({', '.join(self.allowed_paths)}); start it with `atelier serve --allow-path DIR` "
                        "to allow a folder, or run the command in-process (without --engine)")

    def model(self, name: str, kind: str | None = None) -> tuple[dict, Any]:
        """(metadata, inference model), loaded on first use and kept until unloaded."""
        with self._load_lock:
            if name not in self._loaded:
                self._loaded[name] = load_model(self.store, name, self.device)
            metadata, loaded = self._loaded[name]
        if kind is not None and metadata["kind"] != kind:
            raise JobFailed(protocol.BAD_PARAMS, f"model {name!r} is a {metadata['kind']} model, not a {kind} model")
        return metadata, loaded

    def unload(self, name: str | None = None) -> list[str]:
        """Forget one loaded model, or all; returns what was unloaded and frees GPU memory."""
        with self._load_lock:
            names = [name] if name is not None else list(self._loaded)
            released = [n for n in names if self._loaded.pop(n, None) is not None]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return released

    def open_session(self, session: Any, owner: int | None) -> str:
        """Keep a stateful session (e.g. a live music stream) for the client that opened it."""
        if sum(1 for session_owner, _ in self._sessions.values() if session_owner == owner) >= MAX_SESSIONS:
            raise JobFailed(protocol.BUSY, f"this client already has {MAX_SESSIONS} sessions open; close one first")
        session_id = uuid.uuid4().hex[:12]
        self._sessions[session_id] = (owner, session)
        return session_id

    def session(self, session_id: str, owner: int | None) -> Any:
        entry = self._sessions.get(session_id)
        if entry is None or entry[0] != owner:
            raise JobFailed(protocol.NOT_FOUND, f"no session {session_id!r} on this connection; open one first "
                            "(sessions end when their client disconnects)")
        return entry[1]

    def close_session(self, session_id: str, owner: int | None) -> None:
        self.session(session_id, owner)
        del self._sessions[session_id]

    def close_sessions(self, owner: int | None) -> None:
        for session_id, (session_owner, _) in list(self._sessions.items()):
            if session_owner == owner:
                self._sessions.pop(session_id, None)

    def close(self) -> None:
        self.scheduler.stop()
