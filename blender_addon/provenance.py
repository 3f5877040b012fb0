"""Provenance as ID properties: enough on every image, mesh, material and object the add-on
makes to regenerate it exactly.

`atelier_provenance` holds the engine's provenance as JSON (model, model hash, op, params)
plus what the add-on adds: `index` (which of several results), `map` (color, normal,
roughness) and `inputs` (objects whose meshes were sent). A few keys are also stored flat
(`atelier_model`, `atelier_model_hash`, `atelier_op`, `atelier_seed`) so they show in
Blender's Custom Properties panel.
"""
from __future__ import annotations

import json
from typing import Any

KEY = "atelier_provenance"


def stamp(datablock: Any, provenance: dict, **extra: Any) -> None:
    record = {**provenance, **{k: v for k, v in extra.items() if v is not None}}
    datablock[KEY] = json.dumps(record, sort_keys=True)
    datablock["atelier_model"] = str(record.get("model") or "")
    datablock["atelier_model_hash"] = str(record.get("model_hash") or "")
    datablock["atelier_op"] = str(record.get("op") or "")
    seed = (record.get("params") or {}).get("seed", (record.get("params") or {}).get("seed_a"))
    if isinstance(seed, int):
        datablock["atelier_seed"] = seed


def read(datablock: Any) -> dict | None:
    if datablock is None:
        return None
    text = datablock.get(KEY)
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("op") else None


def of_object(obj: Any, prefer: str = "AUTO") -> dict | None:
    """The provenance behind an object: its mesh (SHAPE) or its active material (TEXTURE)."""
    if obj is None:
        return None
    shape = read(getattr(obj, "data", None)) if obj.type == "MESH" else None
    material = obj.active_material
    texture = read(material) if material is not None else None
    if prefer == "SHAPE":
        return shape
    if prefer == "TEXTURE":
        return texture
    return shape or texture
