"""What is done to the images: torchvision's transforms on the CPU (pytorch backend), the
same crops, flips and normalisation on the device (gpu backend), and MixUp/CutMix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.data.decode import EncodedBatch, decode_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """The model's memory format, which the backends deliver the images in."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def train_transform(crop_size: int) -> Callable:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(crop_size, antialias=True),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
            T.ConvertImageDtype(torch.float),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def val_transform(resize_size: int, crop_size: int) -> Callable:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize_size, antialias=True),
            T.CenterCrop(crop_size),
            T.PILToTensor(),
            T.ConvertImageDtype(torch.float),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class DeviceTransform:
    """Decode a batch of file bytes on the device, then crop, flip, stack and normalise.

    Training: RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bilinear with antialias)
    and a horizontal flip at random, parameters drawn on the host as torchvision does.
    Validation: resize the shorter side, then a centre crop.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, train: bool) -> None:
        self.device = device
        self.train = train
        self.crop = cfg.train_crop_size if train else cfg.val_crop_size
        self.resize = cfg.val_resize_size
        self.memory_format = memory_format(cfg)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def _train_crop(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as F

        top, left, height, width = RandomResizedCrop.get_params(
            image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        image = F.resized_crop(image, top, left, height, width, [self.crop, self.crop],
                               antialias=True)
        return F.horizontal_flip(image) if torch.rand(1).item() < 0.5 else image

    def _val_crop(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        image = F.resize(image, [self.resize], antialias=True)
        return F.center_crop(image, [self.crop, self.crop])

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        buffer, sizes, labels, paths = batch
        data = list(torch.split(buffer, sizes))
        crop = self._train_crop if self.train else self._val_crop
        images = torch.stack([crop(img) for img in decode_batch(data, paths, self.device)])
        images = images.contiguous(memory_format=self.memory_format)
        images = images.float().sub_(self.mean).div_(self.std)
        return images, labels.to(self.device, non_blocking=True)



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

