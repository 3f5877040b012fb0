"""Choosing the compute device."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(requested: str = "auto") -> torch.device:
    """auto picks cuda, then mps, then cpu; asking for one that is absent is an error that says so."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to this torch build "
                         f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    if requested == "mps" and not has_mps:
        raise ValueError("--device mps: Apple's Metal backend is not available here; use --device cpu")
    return torch.device(requested)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads in the calling thread only: torch's OpenMP
    thread count is per thread, so a training job in another thread keeps its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interactive_threads() -> int:
    """Intra-op threads for one interactive request on a CPU: half the cores, at least one. The
    artist's Blender or DAW shares the machine, and torch's threads wait for each other when a
    core is busy elsewhere (2 cores, one busy: a 1024² texture took 0.19 s on one thread, 0.70 s
    on two)."""
    return max(1, (os.cpu_count() or 2) // 2)
