"""What the kinds' ops share: the model parameter, provenance, checking arrays from clients,
and the lazily imported `Config` of the kind contract."""
from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from engine import protocol
from engine.server.jobs import JobFailed
from engine.server.ops import Param

MODEL = Param("str", required=True, doc="name of a trained model (models.list)")


def lazy_config(module: str, name: str) -> Callable[[str], Any]:
    """A module `__getattr__` giving the kind contract's `Config` (`name` in `module`) on first
    use: the config modules need torch, which building the CLI's flags from an ops module does not."""
    def __getattr__(attribute: str) -> Any:
        if attribute == "Config":
            return getattr(importlib.import_module(module), name)
        raise AttributeError(f"no attribute {attribute!r} in this kind's ops module")
    return __getattr__


def provenance(metadata: dict, op: str, params: dict[str, Any]) -> dict[str, Any]:
    """Enough to make the same result again: model, its content hash, the op and its parameters."""
    plain = {k: v for k, v in params.items() if not isinstance(v, np.ndarray) and k != "model"}
    return {"model": metadata.get("name"), "model_hash": metadata.get("content_hash"), "kind": metadata.get("kind"),
            "op": op, "params": plain}


def mesh_arrays(op: str, vertices: Any, faces: Any, which: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N×3 float) and faces (M×3 int indexing them) from a client, or a bad_params error."""
    label = f"{which} mesh" if which else "mesh"
    if not isinstance(vertices, np.ndarray) or not isinstance(faces, np.ndarray):
        raise JobFailed(protocol.BAD_PARAMS, f"{op}: the {label} needs 'vertices' and 'faces' arrays")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.dtype.kind != "f" or len(vertices) < 4:
        raise JobFailed(protocol.BAD_PARAMS, f"{op}: {label} vertices must be a float N×3 array with N ≥ 4, "
                        f"got {vertices.dtype} {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu" or len(faces) < 4:
        raise JobFailed(protocol.BAD_PARAMS, f"{op}: {label} faces must be an integer M×3 array with M ≥ 4 "
                        f"(triangulate first), got {faces.dtype} {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise JobFailed(protocol.BAD_PARAMS, f"{op}: {label} faces index vertices outside 0..{len(vertices) - 1}")
    if not np.isfinite(vertices).all():
        raise JobFailed(protocol.BAD_PARAMS, f"{op}: {label} vertices contain NaN or infinity")
    return vertices.astype(np.float32), faces.astype(np.int64)
