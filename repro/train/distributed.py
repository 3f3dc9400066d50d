"""Process-group setup from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

Without those variables everything runs in one process. nccl on GPUs, gloo on CPU (the tests).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistEnv:
    """Join the process group torchrun describes (once per process; later calls reuse it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def broadcast_buffers(model: torch.nn.Module, env: DistEnv) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. DDP broadcasts them before each forward, so
    after the last training step every rank still holds the statistics of its own last batch."""
    if env.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sums of per-rank numbers over all ranks (the numbers themselves in one process)."""
    if not env.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather(value, env: DistEnv) -> list:
    """Every rank's `value` (any picklable object), in rank order ([value] in one process)."""
    if not env.distributed:
        return [value]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, value)
    return gathered
