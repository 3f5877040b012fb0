"""Choosing devices and threads."""
from __future__ import annotations

import threading

import pytest
import torch

from engine.device import intra_op_threads, pick_device


def test_an_absent_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, so asking for it is not an error")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_intra_op_threads_holds_for_the_block_and_the_calling_thread_only():
    seen: dict[str, int] = {}
    inside, leave = threading.Event(), threading.Event()

    def interactive() -> None:
        with intra_op_threads(1):
            seen["inside"] = torch.get_num_threads()
            inside.set()
            leave.wait(10)
        seen["after"] = torch.get_num_threads()

    before = torch.get_num_threads()
    worker = threading.Thread(target=interactive)
    worker.start()
    inside.wait(10)
    seen["other thread meanwhile"] = torch.get_num_threads()
    leave.set()
    worker.join()
    assert seen == {"inside": 1, "other thread meanwhile": before, "after": before}
