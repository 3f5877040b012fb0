"""Saves a model under one name again and again, until killed. Used by the SIGKILL test."""
import sys
from pathlib import Path

import torch

from engine.store.checkpoints import ModelStore

store = ModelStore(Path(sys.argv[1]), builtin=None)
store.save("victim", {"w": torch.zeros(4)}, {"kind": "toy", "version": 0})
print("first save done", flush=True)
version = 1
while True:
    store.save("victim", {"w": torch.full((16 << 20,), float(version))}, {"kind": "toy", "version": version})
    version += 1
