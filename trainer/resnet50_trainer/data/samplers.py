"""Which images each rank reads, and in what order.

  ShardSampler:      validation, every image exactly once over all ranks;
  RepeatedSampler:   training with repeated augmentation (--ra-sampler);
  TrainOrder:        wraps the training sampler to yield TrainKeys (index, crop size,
                     seed) from a given batch on: progressive resizing reaches persistent
                     DataLoader workers, and an epoch resumes mid-way with the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice

import torch
from torch.utils.data import Sampler

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.data.decode import TrainKey
from resnet50_trainer.data.transforms import train_crop_size_at
from resnet50_trainer.seeds import sample_seed


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


class TrainOrder(Sampler[TrainKey]):
    """`sampler`'s order of an epoch as TrainKeys, starting at batch `first_batch`.

    The crop size is the epoch's (progressive resizing): persistent workers keep their
    copy of the dataset from the first epoch, but the sampler runs in the main process, so
    the size travels with every index. The seed is that of the sample's position in this
    rank's order (seeds.sample_seed), so a sample is augmented alike whichever worker
    decodes it, and an epoch resumed at a mid-epoch checkpoint (first_batch > 0) goes on
    with exactly the samples and draws of an epoch never stopped.
    """

    def __init__(self, sampler: Sampler[int], cfg: TrainConfig, rank: int, batch: int) -> None:
        self.sampler, self.cfg, self.rank, self.batch = sampler, cfg, rank, batch
        self.epoch, self.start = 0, 0
        self.crop_size = train_crop_size_at(cfg, 0)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        self.epoch, self.start = epoch, first_batch * self.batch
        self.crop_size = train_crop_size_at(self.cfg, epoch)

    def __iter__(self) -> Iterator[TrainKey]:
        size, seed, epoch, rank = self.crop_size, self.cfg.seed, self.epoch, self.rank
        return (TrainKey(index, size, sample_seed(seed, epoch, rank, position))
                for position, index in islice(enumerate(self.sampler), self.start, None))

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)  # type: ignore[arg-type]
