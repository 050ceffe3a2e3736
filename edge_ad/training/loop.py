"""What both training stages share: device, seeding, DDP, batching and progress."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edge_ad.errors import UserError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device(f"cuda:{local}")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"training.device={name}, but this machine has no CUDA GPU torch can use; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def batches(n: int, batch_size: int, gen: torch.Generator, rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
    """Shuffled index batches; under DDP each rank takes every world-th index of the same permutation."""
    perm = torch.randperm(n, generator=gen)[rank::world]
    for i in range(0, len(perm), batch_size):
        yield perm[i : i + batch_size]


def barrier() -> None:
    """Wait for every rank (rank 0 writes the checkpoints the others then read)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def reduce_mean(value: float, device: torch.device) -> float:
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([value], device=device)
        dist.all_reduce(t)
        return float(t) / dist.get_world_size()
    return value


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not is_main(),
        transient=True,
    )
