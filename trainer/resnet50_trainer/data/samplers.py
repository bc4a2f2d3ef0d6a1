"""Which images each rank reads, and in what order.

  ShardSampler:      validation, every image exactly once over all ranks;
  RepeatedSampler:   training with repeated augmentation (--ra-sampler);
  CropSizeSampler:   wraps the training sampler to yield (index, crop size) pairs, so that
                     progressive resizing reaches persistent DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.data.transforms import train_crop_size_at


class ShardSampler(Sampler[int]):
    """Every index exactly once over all ranks, no padding (rank r takes r, r+W, ...).

    DistributedSampler pads the set to a multiple of the world size, which would count
    some validation images twice; evaluation must see each image exactly once.
    """

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class RepeatedSampler(Sampler[int]):
    """Repeated augmentation (Hoffer et al. 2020; DeiT): each image `reps` times in a row
    of a shuffled epoch, so its copies land on consecutive ranks and are augmented apart.

    The repeated list is padded to a multiple of the world size and rank r takes r, r+W,
    ...; each rank then keeps ceil(size / W) indices, what the training DistributedSampler
    gives it. So an epoch has as many steps as without --ra-sampler, and the step counts
    of the LR schedule, the EMA and resumption do not change (it sees about size / reps
    distinct images). torchvision keeps floor(size // 256 * 256 / W) instead, which makes
    the number of steps depend on the option and on a batch of 256 that is not ours.
    """

    def __init__(self, size: int, rank: int, world_size: int, reps: int, seed: int) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size
        self.reps, self.seed = reps, seed
        self.epoch = 0
        self.num_samples = math.ceil(size / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def repeated(self) -> list[int]:
        """The epoch's whole repeated, padded list, before it is split over the ranks."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # as DistributedSampler
        order = torch.randperm(self.size, generator=generator).repeat_interleave(self.reps)
        indices = order.tolist()
        padding = -len(indices) % self.world_size  # < W <= len: a global batch at least
        return indices + indices[:padding]

    def __iter__(self) -> Iterator[int]:
        mine = self.repeated()[self.rank::self.world_size]
        return iter(mine[:self.num_samples])

    def __len__(self) -> int:
        return self.num_samples


class CropSizeSampler(Sampler[tuple[int, int]]):
    """`sampler`'s indices paired with the epoch's training crop size (progressive
    resizing). Persistent workers keep their copy of the dataset from the first epoch, but
    the sampler runs in the main process, so the size travels with every index."""

    def __init__(self, sampler: Sampler[int], cfg: TrainConfig) -> None:
        self.sampler = sampler
        self.cfg = cfg
        self.crop_size = train_crop_size_at(cfg, 0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        self.crop_size = train_crop_size_at(self.cfg, epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        size = self.crop_size
        return ((index, size) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]
