"""Progress previews in the panel: the small images the engine sends with progress (training
samples, animation frames) shown as icons under the job's progress bar."""
from __future__ import annotations

import os
import shutil
import tempfile

import bpy
import bpy.utils.previews
import numpy as np

from . import png

_collection = None
_folder = ""


def register() -> None:
    global _collection
    _collection = bpy.utils.previews.new()


def unregister() -> None:
    global _collection, _folder
    if _collection is not None:
        bpy.utils.previews.remove(_collection)
    _collection = None
    if _folder:
        shutil.rmtree(_folder, ignore_errors=True)
    _folder = ""


def _as_uint8(preview) -> np.ndarray:
    image = np.asarray(preview)
    if image.dtype != np.uint8:
        scale = 255.0 if image.size and float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image.astype(np.float32)) * scale, 0, 255).round().astype(np.uint8)
    return image


def forget(job) -> None:
    """Drop a finished job's preview (the panel shows previews of running jobs only)."""
    for key in [k for k in (_collection or {}).keys() if k.startswith(f"{id(job)}-")]:
        del _collection[key]
        try:
            os.unlink(os.path.join(_folder, f"{key}.png"))
        except OSError:
            pass


def icon(job) -> int:
    """The icon of the job's newest preview (0 while there is none); loaded on the main thread
    the first time it is asked for."""
    global _folder
    if _collection is None or getattr(job, "preview", None) is None:
        return 0
    key = f"{id(job)}-{job.preview_serial}"
    if key not in _collection:
        if not _folder:
            _folder = tempfile.mkdtemp(prefix="atelier-previews-")
        path = os.path.join(_folder, f"{key}.png")
        with open(path, "wb") as f:
            f.write(png.encode(_as_uint8(job.preview)))
        forget(job)  # only the newest
        _collection.load(key, path, "IMAGE")
    return _collection[key].icon_id
