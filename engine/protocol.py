"""The Atelier wire protocol: framing, headers and arrays. Standard library only.

A frame on the wire:

    u32 body_length (big-endian) | u32 header_length | header (UTF-8 JSON object) | attachments

The header's "arrays" lists each attachment as {"dtype": ..., "shape": [...]}; the
attachments follow the header back to back as raw little-endian bytes. Inside the
header an array is referenced as {"$array": index}. docs/PROTOCOL.md is the contract;
this module implements it and is imported by the engine and every client (Blender
vendors it), so it must never import torch, and numpy only when it is there.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

try:  # numpy is optional: Blender has it, a bare Python may not.
    import numpy as np
except ImportError:  # pragma: no cover - exercised only without numpy
    np = None

PROTOCOL_VERSION = 1

PREFIX = struct.Struct(">II")
MAX_HEADER_BYTES = 1 << 20
MAX_FRAME_BYTES = 512 << 20
MAX_UNAUTHENTICATED_FRAME_BYTES = 64 << 10
MAX_JSON_DEPTH = 32
MAX_ARRAYS = 4096  # descriptors live in the header, so its 1 MB cap bounds them too

# Stable error codes: clients branch on these, humans read the message.
BAD_FRAME = "bad_frame"  # framing broken: the connection closes
FRAME_TOO_LARGE = "frame_too_large"  # the connection closes
BAD_MESSAGE = "bad_message"  # well framed, but not a valid message
AUTH_FAILED = "auth_failed"  # the connection closes
PROTOCOL_MISMATCH = "protocol_mismatch"  # the connection closes
SHUTTING_DOWN = "shutting_down"  # the engine is stopping: running work was stopped (training checkpointed)
TOO_MANY_CONNECTIONS = "too_many_connections"  # over the engine's connection cap: the connection closes
PATH_NOT_ALLOWED = "path_not_allowed"  # a file argument outside the folders this engine may read
UNKNOWN_OP = "unknown_op"
BAD_PARAMS = "bad_params"
NOT_FOUND = "not_found"
BUSY = "busy"
CANCELLED = "cancelled"
MODEL_CORRUPT = "model_corrupt"
UNSUPPORTED = "unsupported"
TOO_LARGE = "too_large"  # an input or model over a stated limit (mesh, image, model config); the message names it
DISK_FULL = "disk_full"  # the engine could not write (no space left); free space and retry
INTERNAL = "internal"

DTYPES = {
    "bool": 1, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "float16": 2,
    "uint32": 4, "int32": 4, "float32": 4, "uint64": 8, "int64": 8, "float64": 8,
}


class ProtocolError(Exception):
    """A message that breaks the protocol. `fatal` means the byte stream is no longer in sync."""

    def __init__(self, code: str, message: str, fatal: bool = False, request_id: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.request_id = request_id  # known when the header parsed: the reply goes to the request


@dataclass
class RawArray:
    """An array as it travels, for Pythons without numpy."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def to_numpy(self):
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)


def encode_frame(header: dict, arrays: list | None = None) -> bytes:
    """Frame a header whose values may contain numpy arrays or RawArrays anywhere."""
    found: list = list(arrays or [])
    header = _extract_arrays(header, found)
    descriptors, blobs = [], []
    for array in found:
        dtype, shape, data = _array_bytes(array)
        descriptors.append({"dtype": dtype, "shape": list(shape)})
        blobs.append(data)
    if len(descriptors) > MAX_ARRAYS:
        raise ValueError(f"a message carries at most {MAX_ARRAYS} arrays, this one has {len(descriptors)}: "
                         "send them in several requests")
    if descriptors:
        header = {**header, "arrays": descriptors}
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    body_length = 4 + len(head) + sum(len(b) for b in blobs)
    return b"".join([PREFIX.pack(body_length, len(head)), head, *blobs])


def _extract_arrays(value: Any, found: list) -> Any:
    if isinstance(value, dict):
        return {k: _extract_arrays(v, found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_extract_arrays(v, found) for v in value]
    if isinstance(value, RawArray) or (np is not None and isinstance(value, np.ndarray)):
        found.append(value)
        return {"$array": len(found) - 1}
    if np is not None and isinstance(value, np.generic):
        return value.item()
    return value


def _array_bytes(array) -> tuple[str, tuple[int, ...], bytes]:
    if isinstance(array, RawArray):
        return array.dtype, tuple(array.shape), array.data
    name = "bool" if array.dtype == np.bool_ else array.dtype.name
    if name not in DTYPES:
        raise ValueError(f"arrays of dtype {array.dtype} cannot travel; use one of {sorted(DTYPES)}")
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return name, array.shape, little.tobytes()


def split_prefix(prefix: bytes, limit: int = MAX_FRAME_BYTES) -> tuple[int, int]:
    """Validate the 8-byte prefix; return (header_length, attachments_length)."""
    body_length, header_length = PREFIX.unpack(prefix)
    if body_length > limit:
        raise ProtocolError(FRAME_TOO_LARGE, f"frame of {body_length} bytes exceeds the limit of {limit} bytes; "
                            "send big arrays in smaller requests", fatal=True)
    if header_length > MAX_HEADER_BYTES:
        raise ProtocolError(FRAME_TOO_LARGE, f"header of {header_length} bytes exceeds the limit of "
                            f"{MAX_HEADER_BYTES} bytes; move bulk data into array attachments", fatal=True)
    if header_length + 4 > body_length or header_length == 0:
        raise ProtocolError(BAD_FRAME, "frame prefix is inconsistent: header length does not fit the body "
                            "length; is the client speaking the Atelier protocol?", fatal=True)
    return header_length, body_length - 4 - header_length


def decode_body(head: bytes, attachments: bytes) -> dict:
    """Parse a header and its attachments; arrays come back as numpy arrays (or RawArrays)."""
    header = _parse_header(head)
    try:
        return _with_arrays(header, attachments)
    except ProtocolError as e:
        e.request_id = header.get("id")
        raise


def _with_arrays(header: dict, attachments: bytes) -> dict:
    descriptors = header.pop("arrays", [])
    if not isinstance(descriptors, list) or len(descriptors) > MAX_ARRAYS:
        raise ProtocolError(BAD_MESSAGE, f"'arrays' must be a list of at most {MAX_ARRAYS} descriptors")
    arrays, offset = [], 0
    for i, d in enumerate(descriptors):
        dtype, shape = _check_descriptor(i, d)
        nbytes = DTYPES[dtype] * math.prod(shape)
        data = attachments[offset:offset + nbytes]
        if len(data) != nbytes:
            raise ProtocolError(BAD_MESSAGE, f"array {i} declares {nbytes} bytes but only {len(data)} follow")
        offset += nbytes
        raw = RawArray(dtype, shape, bytearray(data))  # writable, so numpy and torch can use it in place
        arrays.append(raw.to_numpy() if np is not None else raw)
    if offset != len(attachments):
        raise ProtocolError(BAD_MESSAGE, f"{len(attachments) - offset} attachment bytes are not described by 'arrays'")
    return _insert_arrays(header, arrays)


def _parse_header(head: bytes) -> dict:
    try:
        header = json.loads(head.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError(BAD_MESSAGE, f"header nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(BAD_MESSAGE, f"header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError(BAD_MESSAGE, "header must be a JSON object")
    if _depth(header) > MAX_JSON_DEPTH:
        raise ProtocolError(BAD_MESSAGE, f"header nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(header.get("type"), str):
        raise ProtocolError(BAD_MESSAGE, "header needs a string 'type'")
    return header


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in headers")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def _check_descriptor(i: int, d: Any) -> tuple[str, tuple[int, ...]]:
    if not isinstance(d, dict) or d.get("dtype") not in DTYPES or not isinstance(d.get("shape"), list):
        raise ProtocolError(BAD_MESSAGE, f"array {i} needs 'dtype' (one of {sorted(DTYPES)}) and a 'shape' list")
    shape = d["shape"]
    if len(shape) > 8 or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**40 for n in shape):
        raise ProtocolError(BAD_MESSAGE, f"array {i} has a bad shape {shape!r}: at most 8 non-negative integers")
    return d["dtype"], tuple(shape)


def _insert_arrays(value: Any, arrays: list) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$array"}:
            index = value["$array"]
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(arrays):
                raise ProtocolError(BAD_MESSAGE, f"reference to array {index!r}, but {len(arrays)} arrays came")
            return arrays[index]
        return {k: _insert_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_insert_arrays(v, arrays) for v in value]
    return value


def read_frame(sock_file, limit: int = MAX_FRAME_BYTES) -> dict:
    """Blocking read of one frame from a binary file object (e.g. socket.makefile('rb'))."""
    prefix = _read_exactly(sock_file, PREFIX.size)
    header_length, attachments_length = split_prefix(prefix, limit)
    head = _read_exactly(sock_file, header_length)
    return decode_body(head, _read_exactly(sock_file, attachments_length))


def _read_exactly(f, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) < n:
        raise ConnectionError("connection closed in the middle of a frame" if data else "connection closed")
    return data


def error_header(request_id: Any, code: str, message: str) -> dict:
    return {"type": "error", "id": request_id, "code": code, "message": message}
