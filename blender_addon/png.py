"""uint8 arrays -> PNG bytes, with the standard library and numpy (no Pillow in Blender).

Runs on the worker thread: encoding a 2048² texture takes a good fraction of a second,
which must not be spent on Blender's main thread.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray+alpha, RGB, RGBA


def encode(image: np.ndarray, level: int = 1) -> bytes:
    """PNG of an H×W or H×W×C (C in 1..4) uint8 image, top row first. Level 1: the file is
    packed into the .blend once; encoding speed matters more than a few percent of size."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"PNG encoding needs uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in _COLOUR_TYPE:
        raise ValueError(f"PNG encoding needs H×W or H×W×C with C in 1..4, got shape {image.shape}")
    height, width, channels = image.shape
    rows = np.empty((height, 1 + width * channels), np.uint8)
    rows[:, 0] = 0  # filter type None for every row
    rows[:, 1:] = image.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)), _chunk(b"IEND", b"")])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
