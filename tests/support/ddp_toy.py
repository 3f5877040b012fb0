"""Trains the toy objective for a few steps; run plainly or under torchrun. Used by the DDP test."""
import sys
from pathlib import Path

import torch

from engine.store.checkpoints import ModelStore
from engine.train import distributed
from engine.train.config import TrainConfig
from engine.train.trainer import TrainRun, train
from support.toy import ToyObjective

torch.set_num_threads(1)
device = torch.device("cpu")
world = distributed.init_from_environment(device)
store = ModelStore(Path(sys.argv[1]), builtin=None)
config = TrainConfig(steps=30, batch_size=8, lr=0.05, optimizer="sgd", log_every=1, checkpoint_every=1000)
train(ToyObjective(), config, TrainRun(store, "toy", "toy", device, world=world))
distributed.leave(world)  # as the engine does: exiting with gloo's threads running can abort a rank
