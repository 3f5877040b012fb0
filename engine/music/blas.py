"""numpy's BLAS threads, pinned to one while music is generated.

Generation is a few small matrix-vector products per token (engine/music/fast.py). numpy's
OpenBLAS spreads each over every core, and its threads wait on each other when another core is
busy (training, the DAW): issue 21 measured 41-192x real time under load, 902-999x pinned to one
thread. torch's thread count is per thread (engine.device.intra_op_threads); OpenBLAS's is one
for the whole process, so generations running at once share one pin, counted: the first in
sets it, the last out puts back what was there.

threadpoolctl does this for any BLAS, but it is not one of Atelier's dependencies (and not in
this environment), so this module calls the OpenBLAS that numpy's wheels ship (numpy.libs,
numpy/.dylibs) through its C API. Where numpy has another BLAS (Accelerate, MKL) it does nothing.
"""
from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

_lock = threading.Lock()
_users = 0
_before = 0
_api: tuple[Callable[[], int], Callable[[int], None]] | None | bool = False  # False: not looked up yet


def openblas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the thread count of numpy's OpenBLAS, or None where numpy has none."""
    global _api
    if _api is False:
        _api = None
        root = Path(np.__file__).parent
        for path in sorted([*root.parent.glob("numpy.libs/*openblas*"), *root.glob(".dylibs/*openblas*")]):
            try:
                lib = ctypes.CDLL(str(path))  # already loaded by numpy: the same library, not a second copy
            except OSError:
                continue
            for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                                   ("openblas", "")):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    _api = (get, put)
                    return _api
    return _api or None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with numpy's BLAS on one thread (for every thread of the process, while any
    generation runs)."""
    global _users, _before
    api = openblas()
    if api is None:
        yield
        return
    get, put = api
    with _lock:
        if _users == 0:
            _before = get()
            put(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                put(_before)
