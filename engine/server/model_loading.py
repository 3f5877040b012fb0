"""Loading a stored model without trusting its file: its size and config are checked before any
memory is allocated, and whatever the kind cannot build becomes a stable error code."""
from __future__ import annotations

import math
from typing import Any

import torch

from engine import protocol
from engine.config import ConfigOutOfBounds
from engine.kinds import KIND_MODULES, kind_module
from engine.ops import JobFailed
from engine.store.checkpoints import ModelCorrupt, ModelNotFound, ModelStore

MAX_MODEL_PARAMETERS = 100_000_000  # 400 MB as float32; the shipped models have about 1 M


def load_model(store: ModelStore, name: str, device: torch.device) -> tuple[dict, Any]:
    """(metadata, the kind's inference model), or a JobFailed with the reason."""
    check_before_load(store, name)
    try:
        metadata, weights = store.load(name)
    except ModelNotFound as e:
        raise JobFailed(protocol.NOT_FOUND, str(e)) from None
    except ModelCorrupt as e:
        raise JobFailed(protocol.MODEL_CORRUPT, str(e)) from None
    if metadata.get("kind") not in KIND_MODULES:
        raise JobFailed(protocol.UNSUPPORTED, f"model {name!r} is of kind {metadata.get('kind')!r}, "
                        f"which this engine cannot run (kinds: {', '.join(KIND_MODULES) or 'none'})")
    try:
        return metadata, kind_module(metadata["kind"]).load(metadata["config"], weights, device)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise JobFailed(protocol.TOO_LARGE, f"model {name!r} does not fit in memory; unload others first "
                        "(models.unload)") from None
    except (ValueError, RuntimeError) as e:  # a config or weights the kind cannot build
        raise JobFailed(protocol.MODEL_CORRUPT, f"model {name!r} cannot be loaded ({e}); delete it or train it "
                        "again") from None


def check_before_load(store: ModelStore, name: str) -> None:
    """Before a model is loaded: its stored tensors within MAX_MODEL_PARAMETERS, and its config within
    its bounds and matching those tensors, found by building it on the meta device (no memory)."""
    try:
        metadata = store.metadata(name)
        shapes = store.tensor_shapes(name)
    except ModelNotFound as e:
        raise JobFailed(protocol.NOT_FOUND, str(e)) from None
    except ModelCorrupt as e:
        raise JobFailed(protocol.MODEL_CORRUPT, str(e)) from None
    parameters = sum(math.prod(shape) for shape in shapes.values())
    if parameters > MAX_MODEL_PARAMETERS:
        raise JobFailed(protocol.TOO_LARGE, f"model {name!r} has {parameters:,} parameters, over the limit of "
                        f"{MAX_MODEL_PARAMETERS:,}")
    if metadata.get("kind") not in KIND_MODULES or not isinstance(metadata.get("config"), dict):
        return  # load_model says what is wrong
    weights = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    try:
        # A module the kind's load imports for the first time is imported inside this block, so its
        # module-level tensors would be meta tensors for good: kinds keep none (texture's upsampling
        # folds are plain numbers; tests/engine/test_hardening_inputs.py loads every shipped model first).
        with torch.device("meta"):
            kind_module(metadata["kind"]).load(metadata["config"], weights, "meta")
    except ConfigOutOfBounds as e:
        raise JobFailed(protocol.TOO_LARGE if e.too_large else protocol.MODEL_CORRUPT,
                        f"model {name!r} cannot be loaded: {e}") from None
    except RuntimeError as e:
        if "state_dict" in str(e):
            raise JobFailed(protocol.MODEL_CORRUPT, f"model {name!r} has a config that does not match its weights; "
                            "delete it or train it again") from None
    except Exception:  # a step the meta device cannot run: the real load decides
        pass
