"""The process's place in the job, from the standard torchrun environment.

RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set by torchrun (or by
our launcher, which runs torchrun); without them the trainer is one plain process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.errors import ConfigError, RankConfigError


@dataclass(frozen=True)
class Placement:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not an integer") from None


def placement_from_env(cfg: TrainConfig, env: Mapping[str, str] = os.environ) -> Placement:
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", 0)
    world_size = _env_int(env, "WORLD_SIZE", 1)
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if not want_cuda:
        return Placement(rank, local_rank, world_size, torch.device("cpu"))
    gpus = torch.cuda.device_count()
    if gpus == 0:
        raise ConfigError("--device cuda was asked for, but no GPU is visible")
    if local_rank >= gpus:
        raise RankConfigError(
            f"local rank {local_rank} has no GPU: this machine shows {gpus} "
            f"(start at most {gpus} processes per node)"
        )
    return Placement(rank, local_rank, world_size, torch.device("cuda", local_rank))


def init(cfg: TrainConfig, where: Placement) -> None:
    """Join the process group (NCCL on GPU, gloo on CPU) when there is more than one process."""
    if where.device.type == "cuda":
        torch.cuda.set_device(where.device)
    if where.world_size == 1:
        return
    backend = cfg.dist_backend or ("nccl" if where.device.type == "cuda" else "gloo")
    device_id = where.device if backend == "nccl" else None
    dist.init_process_group(backend, rank=where.rank, world_size=where.world_size,
                            device_id=device_id)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over all processes, in place; a no-op in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def broadcast_from_main(obj: object) -> object:
    """Rank 0's value of a small picklable object on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
