"""Data-parallel training under torchrun: gloo on the CPU, nccl on CUDA."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_environment(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment; one process needs none."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def leave(world: World) -> None:
    """Leave the process group once every process is done: a process that exits with gloo's
    threads still running can abort ("terminate called without an active exception")."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_device(requested: torch.device) -> torch.device:
    """Under torchrun each process takes the GPU matching its LOCAL_RANK."""
    if requested.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return requested


def mean_across(world: World, values: dict[str, float], device: torch.device) -> dict[str, float]:
    if world.size == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: v / world.size for k, v in zip(keys, tensor.tolist())}


def max_across(world: World, value: float, device: torch.device) -> float:
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()
