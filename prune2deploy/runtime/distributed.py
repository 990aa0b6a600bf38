"""torchrun / DistributedDataParallel: who am I, and only rank 0 writes.

Under `torchrun --nproc-per-node N -m prune2deploy compile ...` every process prunes the same way (seeded),
trains on its own shard of the batches with DistributedDataParallel (gloo on CPU, nccl on GPU) and evaluates
the full validation set, so every rank takes the same early-stopping decisions. Only rank 0 exports,
benchmarks and writes.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init() -> bool:
    """Join the process group torchrun set up (once); False when not running distributed."""
    if world_size() <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def shard(batches: list) -> list:
    """This rank's share of the batches; every rank gets the same number, so every rank takes the same steps."""
    if world_size() <= 1:
        return batches
    per_rank = len(batches) // world_size()
    return batches[rank()::world_size()][:per_rank]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any (stop decisions that depend on a rank's clock)."""
    if world_size() <= 1 or not dist.is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def min_over_ranks(value: int) -> int:
    """The smallest of every rank's `value` (plans that depend on a rank's clock must agree)."""
    if world_size() <= 1 or not dist.is_initialized():
        return value
    t = torch.tensor([int(value)])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DDP when distributed, else unchanged."""
    if not init():
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


def barrier() -> None:
    if world_size() > 1 and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    """Leave the process group (after recovery; rank 0 goes on alone to export)."""
    if world_size() > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
