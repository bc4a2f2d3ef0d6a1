"""What is done to the images: torchvision's transforms on the CPU (pytorch backend), the
same crops, flips, augmentation policies, erasing and normalisation on the device (gpu
backend), the crop size of progressive resizing, and MixUp/CutMix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.data.decode import EncodedBatch, decode_batch
from resnet50_trainer.seeds import seeded

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """The model's memory format, which the backends deliver the images in."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def train_crop_size_at(cfg: TrainConfig, epoch: int) -> int:
    """The training crop size of `epoch` (0-based) under progressive resizing (FFCV).

    --progressive-resize-from until START x epochs, then linear up to --train-crop-size at
    END x epochs, held after; in between rounded to a multiple of 32 as FFCV does (whole
    steps of ResNet's stride, fewer distinct shapes), within [from, --train-crop-size].
    """
    low, high = cfg.progressive_resize_from, cfg.train_crop_size
    if low is None:
        return high
    start, end = (fraction * cfg.epochs for fraction in cfg.progressive_resize_ramp)
    if epoch <= start:
        return low
    if epoch >= end:
        return high
    size = low + (high - low) * (epoch - start) / (end - start)
    return min(max(round(size / 32) * 32, low), high)


def _torchvision_transforms(cfg: TrainConfig):
    """torchvision.transforms, or its v2 with --use-v2: the same classes, by name."""
    if cfg.use_v2:
        from torchvision.transforms import v2

        return v2
    from torchvision import transforms

    return transforms


def auto_augment_policy(cfg: TrainConfig, T, tensors: bool = False) -> Callable | None:
    """--auto-augment as a transform of module T (torchvision.transforms or its v2, whose
    policies also take uint8 tensors: tensors=True, the gpu backend), or None."""
    if cfg.auto_augment is None:
        return None
    mode = cfg.interpolation
    # The rotations, shears and translations of a tensor know only nearest and bilinear
    # (PIL's bicubic too), and AugMix turns PIL images into tensors: the nearest of those.
    if (tensors or cfg.auto_augment == "augmix") and mode not in ("nearest", "bilinear"):
        mode = "nearest" if mode.startswith("nearest") else "bilinear"
    mode = T.InterpolationMode(mode)
    if cfg.auto_augment == "ra":
        return T.RandAugment(interpolation=mode, magnitude=cfg.ra_magnitude)
    if cfg.auto_augment == "ta_wide":
        return T.TrivialAugmentWide(interpolation=mode)
    if cfg.auto_augment == "augmix":
        return T.AugMix(interpolation=mode, severity=cfg.augmix_severity)
    return T.AutoAugment(T.AutoAugmentPolicy(cfg.auto_augment), interpolation=mode)


def _normalised_tensor(cfg: TrainConfig, T) -> list[Callable]:
    """PIL image -> normalised float CHW tensor."""
    to_float = (T.ToDtype(torch.float, scale=True) if cfg.use_v2  # v2's name for it
                else T.ConvertImageDtype(torch.float))
    return [T.PILToTensor(), to_float, T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(cfg: TrainConfig, crop_size: int | None = None) -> Callable:
    """The pytorch backend's training pipeline on a PIL image; crop_size defaults to
    --train-crop-size (progressive resizing asks for others)."""
    T = _torchvision_transforms(cfg)
    mode = T.InterpolationMode(cfg.interpolation)
    steps = [T.RandomResizedCrop(crop_size or cfg.train_crop_size, scale=cfg.train_crop_scale,
                                 interpolation=mode, antialias=True)]
    if cfg.hflip > 0:
        steps.append(T.RandomHorizontalFlip(cfg.hflip))
    if cfg.auto_augment is not None:
        steps.append(auto_augment_policy(cfg, T))
    steps += _normalised_tensor(cfg, T)
    if cfg.random_erase > 0:
        steps.append(T.RandomErasing(cfg.random_erase))
    if cfg.use_v2:  # v2 keeps its tv_tensors.Image subclass; the batches are plain tensors
        steps.append(T.ToPureTensor())
    return T.Compose(steps)


def val_transform(cfg: TrainConfig) -> Callable:
    """The pytorch backend's evaluation pipeline: resize the shorter side, centre crop."""
    T = _torchvision_transforms(cfg)
    steps = [T.Resize(cfg.val_resize_size, interpolation=T.InterpolationMode(cfg.interpolation),
                      antialias=True),
             T.CenterCrop(cfg.val_crop_size),
             *_normalised_tensor(cfg, T)]
    if cfg.use_v2:
        steps.append(T.ToPureTensor())
    return T.Compose(steps)


class DeviceTransform:
    """Decode a batch of file bytes on the device, then crop, augment, stack and normalise.

    Training, per image as the pytorch backend does: RandomResizedCrop (--train-crop-scale,
    ratio 3/4-4/3, --interpolation with antialias) with parameters drawn on the host as
    torchvision does, a flip with probability --hflip, the --auto-augment policy on the
    uint8 image (its warps bilinear or nearest); after normalisation, RandomErasing
    (--random-erase). The crop size follows progressive resizing through set_epoch.
    Validation: resize the shorter side, then a centre crop.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, train: bool) -> None:
        from torchvision.transforms import v2

        self.cfg = cfg
        self.device = device
        self.train = train
        self.crop = train_crop_size_at(cfg, 0) if train else cfg.val_crop_size
        self.resize = cfg.val_resize_size
        self.interpolation = v2.InterpolationMode(cfg.interpolation)
        self.policy = auto_augment_policy(cfg, v2, tensors=True) if train else None
        self.erase = (v2.RandomErasing(cfg.random_erase, inplace=True)
                      if train and cfg.random_erase > 0 else None)
        self.memory_format = memory_format(cfg)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def set_epoch(self, epoch: int) -> None:
        """Training crops of `epoch`'s size (progressive resizing)."""
        if self.train:
            self.crop = train_crop_size_at(self.cfg, epoch)

    def _train_crop(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as F

        top, left, height, width = RandomResizedCrop.get_params(
            image, scale=list(self.cfg.train_crop_scale), ratio=[3 / 4, 4 / 3])
        image = F.resized_crop(image, top, left, height, width, [self.crop, self.crop],
                               interpolation=self.interpolation, antialias=True)
        if self.cfg.hflip > 0 and torch.rand(1).item() < self.cfg.hflip:
            image = F.horizontal_flip(image)
        return self.policy(image) if self.policy is not None else image

    def _val_crop(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        image = F.resize(image, [self.resize], interpolation=self.interpolation, antialias=True)
        return F.center_crop(image, [self.crop, self.crop])

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        buffer, sizes, labels, paths, seed = batch
        data = list(torch.split(buffer, sizes))
        decoded = decode_batch(data, paths, self.device)
        if not self.train:
            images = torch.stack([self._val_crop(img) for img in decoded])
            return self._normalised(images), labels.to(self.device, non_blocking=True)
        assert seed is not None, "training batches come from samplers.TrainOrder"
        with seeded(seed):  # the batch's draws, whenever and wherever it is made
            images = self._normalised(torch.stack([self._train_crop(img) for img in decoded]))
            if self.erase is not None:
                for image in images:  # views: each image erased (or not) on its own, in place
                    self.erase(image)
        return images, labels.to(self.device, non_blocking=True)

    def _normalised(self, images: torch.Tensor) -> torch.Tensor:
        images = images.contiguous(memory_format=self.memory_format)
        return images.float().sub_(self.mean).div_(self.std)


def build_batch_mixer(
    cfg: TrainConfig, num_classes: int
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """torchvision's MixUp/CutMix (one of them at random per batch), applied on the device."""
    from torchvision.transforms import v2

    choices = []
    if cfg.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
    if cfg.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

