"""The training configuration, its command line and the named presets.

Precedence, lowest first: the defaults of `TrainConfig`, the chosen `--preset`,
torchrun's PET_* environment (set on PyTorchJob-style pods), then options given on
the command line. Option names follow
torchvision's references/classification/train.py so existing commands carry over.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from resnet50_trainer.contract import PRECISIONS
from resnet50_trainer.errors import ConfigError

LR_SCHEDULERS = ("cosine", "step", "exponential", "linear")
# torchvision's scheduler names, accepted so its commands keep working.
LR_SCHEDULER_ALIASES = {"steplr": "step", "multisteplr": "step", "cosineannealinglr": "cosine",
                        "exponentiallr": "exponential", "linearlr": "linear"}
LR_WARMUP_METHODS = ("linear", "constant")
OPTIMIZERS = ("sgd", "sgd_nesterov", "rmsprop", "adamw")
DATA_BACKENDS = ("pytorch", "gpu", "synthetic")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")
# torchvision's --auto-augment policies: RandAugment, TrivialAugmentWide, AugMix and the
# three AutoAugment policies.
AUTO_AUGMENT_POLICIES = ("ra", "ta_wide", "augmix", "imagenet", "cifar10", "svhn")
# pycls' and Detectron's 8192 images: about 0.6% of an ImageNet epoch, whatever the batch.
PRECISE_BN_IMAGES = 8192
# Without --lr-warmup-epochs, a peak LR above torchvision's 0.1 (a global batch above 256
# at --base-lr 0.1) warms up for a tenth of the run, at most 5 epochs (Goyal et al. 2017).
AUTO_WARMUP_ABOVE_LR = 0.1
AUTO_WARMUP_MAX_EPOCHS = 5.0
IMAGENET_TRAIN_SIZE = 1_281_167
IMAGENET_VAL_SIZE = 50_000
# The variables torchrun reads its flags from; PyTorchJob-style pods carry them.
PET_VARIABLES = {
    "PET_NNODES": "nnodes",
    "PET_NPROC_PER_NODE": "nproc_per_node",
    "PET_NODE_RANK": "node_rank",
    "PET_MASTER_ADDR": "master_addr",
    "PET_MASTER_PORT": "master_port",
}

# torch.compile's modes: reduce-overhead adds CUDA graphs; the max-autotune ones search
# kernel configurations (minutes of compiling).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainConfig:
    # Data
    data_path: str | None = None
    data_backend: str = "pytorch"
    synthetic_train_size: int = IMAGENET_TRAIN_SIZE
    synthetic_val_size: int = IMAGENET_VAL_SIZE
    num_classes: int | None = None  # from the dataset; 1000 for synthetic data
    train_crop_size: int = 224
    train_crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop's area range
    hflip: float = 0.5  # probability of a horizontal flip
    val_resize_size: int = 256
    val_crop_size: int = 224
    interpolation: str = "bilinear"
    auto_augment: str | None = None
    ra_magnitude: int = 9
    augmix_severity: int = 3
    random_erase: float = 0.0
    ra_sampler: bool = False  # repeated augmentation
    ra_reps: int = 3
    # Progressive resizing (FFCV): train crops grow from this size to --train-crop-size
    # between the two fractions of the run.
    progressive_resize_from: int | None = None
    progressive_resize_ramp: tuple[float, float] = (0.75, 0.875)
    use_v2: bool = False  # torchvision.transforms.v2 in the pytorch backend
    cache_dataset: bool = True
    workers: int = 8
    # Model
    model: str = "resnet50"
    weights: str | None = None  # a local file or a torchvision weights name in the cache
    # Each residual block starts as the identity (its last BatchNorm's weight 0), which keeps
    # the first steps stable (Goyal et al. 2017; timm's default). torchvision's is off.
    zero_init_residual: bool = True
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    precision: str = "fp32"
    sync_bn: bool = False
    # Placement and launch
    device: str = "auto"
    dist_backend: str | None = None
    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    # Optimisation
    batch_size: int = 32
    global_batch_size: int | None = None
    epochs: int = 90
    lr: float | None = None
    base_lr: float = 0.1
    opt: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    norm_weight_decay: float | None = None
    bias_weight_decay: float | None = None
    transformer_embedding_decay: float | None = None
    clip_grad_norm: float | None = None
    # Cosine over the run whatever --epochs is; torchvision's default, StepLR every 30
    # epochs, never decays a run shorter than 31 epochs (docs/trainer.md#learning-rate).
    lr_scheduler: str = "cosine"
    lr_steps: tuple[int, ...] | None = None  # step: these epochs; else every --lr-step-size
    lr_step_size: int | None = None  # epochs; with neither, at a third and two thirds of the run
    lr_gamma: float = 0.1
    lr_min: float = 0.0
    lr_warmup_epochs: float | None = None  # None: automatic, see warmup_epochs()
    lr_warmup_method: str = "linear"
    lr_warmup_decay: float = 0.01
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    model_ema: bool = False
    model_ema_steps: int = 32
    model_ema_decay: float = 0.99998
    # Evaluation, checkpoints, reporting
    eval_every: int = 1
    # BatchNorm statistics re-estimated on this many training images before every
    # evaluation (precise BN, as pycls and Detectron2 do); 0: off.
    precise_bn_images: int = PRECISE_BN_IMAGES
    test_only: bool = False
    output_dir: str = "runs/resnet50"
    resume: str | None = None
    keep_checkpoints: int = 3
    checkpoint_interval_minutes: float | None = None  # also save mid-epoch this often
    print_freq: int = 10
    metrics_port: int = 0  # rank 0's live progress (resnet50_trainer.live); 0: off
    termination_log: str | None = None  # rank 0 leaves its final figures there
    seed: int = 0
    use_deterministic_algorithms: bool = False
    preset: str | None = None

    def per_process_batch(self, world_size: int) -> int:
        if self.global_batch_size is None:
            return self.batch_size
        return self.global_batch_size // world_size

    def peak_lr(self, world_size: int) -> float:
        """--lr, or --base-lr (per 256 images) scaled linearly to the global batch."""
        if self.lr is not None:
            return self.lr
        return self.base_lr * self.per_process_batch(world_size) * world_size / 256

    def warmup_epochs(self, world_size: int) -> float:
        """--lr-warmup-epochs, or the automatic warm-up (AUTO_WARMUP_ABOVE_LR)."""
        if self.lr_warmup_epochs is not None:
            return self.lr_warmup_epochs
        if self.peak_lr(world_size) <= AUTO_WARMUP_ABOVE_LR:
            return 0.0
        return min(AUTO_WARMUP_MAX_EPOCHS, self.epochs / 10)

    def step_milestones(self) -> tuple[int, ...]:
        """The epochs at which the step schedule decays: --lr-steps, else every
        --lr-step-size epochs (torchvision's StepLR), else a third and two thirds into the
        run (30 and 60 of 90 epochs, as torchvision's default)."""
        if self.lr_steps is not None:
            return self.lr_steps
        if self.lr_step_size is not None:
            return tuple(range(self.lr_step_size, self.epochs, self.lr_step_size))
        return tuple(sorted({max(1, round(self.epochs * k / 3)) for k in (1, 2)}))


# The reference results (BI-V100, ../seeds) give the per-card batch size and precision
# of each configuration; the recipe around them is torchvision's 90-epoch ResNet50
# recipe (SGD 0.9, 0.1 per 256 images, wd 1e-4, step decay at 30 and 60, torchvision's
# initialisation), with a 5-epoch linear warm-up on several cards because the linearly
# scaled LR is large (Goyal et al.). Recipes train as published: torchvision's init.
_PUBLISHED = {"zero_init_residual": False}
_STEP = {"lr_scheduler": "step", "lr_warmup_epochs": 0.0, **_PUBLISHED}
_MULTI_CARD = {"lr_scheduler": "step", "lr_warmup_epochs": 5.0, **_PUBLISHED}
_AMP = {"precision": "amp", "channels_last": True}
PRESETS: dict[str, dict[str, Any]] = {
    "fp32-1card": {"nproc_per_node": 1, "batch_size": 280, **_STEP},
    "amp-1card": {"nproc_per_node": 1, "batch_size": 300, **_AMP, **_STEP},
    "fp32-4cards": {"nproc_per_node": 4, "batch_size": 300, **_MULTI_CARD},
    "amp-4cards": {"nproc_per_node": 4, "batch_size": 512, **_AMP, **_MULTI_CARD},
    "fp32-8cards": {"nproc_per_node": 8, "batch_size": 300, **_MULTI_CARD},
    "amp-8cards": {"nproc_per_node": 8, "batch_size": 480, **_AMP, **_MULTI_CARD},
    "fp32-16cards": {"nnodes": 2, "nproc_per_node": 8, "batch_size": 300, **_MULTI_CARD},
    "amp-16cards": {"nnodes": 2, "nproc_per_node": 8, "batch_size": 480, **_AMP, **_MULTI_CARD},
    # PaddleClas ResNet50.yaml: 4 cards x 64, piecewise decay at 30/60/90 of 120 epochs.
    "paddleclas-fp32-4cards": {"nproc_per_node": 4, "batch_size": 64, "epochs": 120,
                               "lr_scheduler": "step", "lr_steps": (30, 60, 90),
                               "lr_warmup_epochs": 0.0, **_PUBLISHED},
    # torchvision's ResNet50 IMAGENET1K_V1 (76.13): `train.py --model resnet50` on 8 GPUs.
    "torchvision-v1": {"nproc_per_node": 8, "batch_size": 32, "lr": 0.1, "lr_scheduler": "step",
                       "lr_step_size": 30, "lr_warmup_epochs": 0.0, "precise_bn_images": 0,
                       **_PUBLISHED},
    # torchvision's ResNet50 IMAGENET1K_V2 (80.858), its published command line.
    "torchvision-v2": {
        "nproc_per_node": 8, "batch_size": 128, "lr": 0.5, "epochs": 600,
        "lr_scheduler": "cosine", "lr_warmup_epochs": 5.0, "lr_warmup_method": "linear",
        "auto_augment": "ta_wide", "random_erase": 0.1, "weight_decay": 2e-5,
        "norm_weight_decay": 0.0, "label_smoothing": 0.1, "mixup_alpha": 0.2,
        "cutmix_alpha": 1.0, "train_crop_size": 176, "model_ema": True,
        "val_resize_size": 232, "ra_sampler": True, "ra_reps": 4, "precise_bn_images": 0,
        **_PUBLISHED,
    },
    # FFCV's rn50_16_epochs.yaml (73.8 in 16 epochs on 8 A100s): 8 x 512 images at 1.7,
    # its "cyclic" schedule (linear from 1e-4 x LR to the peak at epoch 2, then linearly
    # to 0), label smoothing 0.1, no weight decay on BatchNorm, 160 px crops growing to
    # 192 px between epochs 11 and 13, evaluation on 256 px centre crops of 224/256 of the
    # image. Not here: its BlurPool layers and test-time flip averaging.
    "ffcv-16epochs": {
        "nproc_per_node": 8, "batch_size": 512, "lr": 1.7, "epochs": 16,
        "lr_scheduler": "linear", "lr_warmup_epochs": 2.0, "lr_warmup_decay": 1e-4,
        "label_smoothing": 0.1, "norm_weight_decay": 0.0,
        "train_crop_size": 192, "progressive_resize_from": 160,
        "progressive_resize_ramp": (11 / 16, 13 / 16), "val_resize_size": 292,
        "val_crop_size": 256, **_AMP, **_PUBLISHED,
    },
    # A short CPU run on generated data: the README's demo and the kind smoke job.
    "cpu-smoke": {
        "data_backend": "synthetic",
        "device": "cpu",
        "synthetic_train_size": 128,
        "synthetic_val_size": 40,
        "num_classes": 10,
        "train_crop_size": 32,
        "val_resize_size": 32,
        "val_crop_size": 32,
        "batch_size": 16,
        "epochs": 2,
        "workers": 0,
        "print_freq": 2,
    },
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _default(name: str) -> Any:
    return _FIELDS[name].default


def _number(convert: Callable[[str], Any], what: str,
            ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type= whose message says what was expected (argparse's own would name
    this helper)."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, "a whole number of at least 1", lambda v: v >= 1)
_port = _number(int, "a port number (0 to 65535)", lambda v: 0 <= v <= 65535)
_non_negative_float = _number(float, "a number of at least 0", lambda v: v >= 0)
_positive_number = _number(float, "a number greater than 0", lambda v: v > 0)
_probability = _number(float, "a probability between 0 and 1", lambda v: 0 <= v <= 1)
_fraction = _number(float, "a fraction between 0 and 1", lambda v: 0 <= v <= 1)


def _lower_choice(choices: tuple[str, ...], aliases: Mapping[str, str] | None = None):
    """A case-insensitive choice, as torchvision's options are (`--lr-scheduler StepLR`)."""
    def parse(text: str) -> str:
        name = (aliases or {}).get(text.lower(), text.lower())
        if name not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice {text!r} (choose from {', '.join(choices)})")
        return name

    return parse


_scheduler = _lower_choice(LR_SCHEDULERS, LR_SCHEDULER_ALIASES)


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    # Every default is SUPPRESSed so that only options the user typed reach the
    # namespace; defaults come from TrainConfig and the preset (see module doc).
    p = _Parser(
        prog="resnet50-train",
        description="Train ResNet50 on ImageNet with PyTorch DDP.",
        epilog="Plot the metrics of a run: resnet50-train plot OUTPUT_DIR [-o FILE.png]",
        argument_default=argparse.SUPPRESS,
    )

    def add(*flags: str, dest: str, help: str, **kw: Any) -> None:
        if "action" not in kw or kw["action"] is argparse.BooleanOptionalAction:
            help = f"{help} (default: {_default(dest)})"
        g.add_argument(*flags, dest=dest, help=help, **kw)  # g: the group being filled

    g: argparse._ActionsContainer = p
    add("--preset", dest="preset", choices=sorted(PRESETS), help="a reference configuration")
    g = p.add_argument_group("data")
    add("--data-path", dest="data_path", help="ImageNet root: train/ and val/ folders or lists")
    add("--data-backend", dest="data_backend", choices=DATA_BACKENDS, help="input pipeline")
    g.add_argument("--synthetic", dest="data_backend", action="store_const", const="synthetic",
                   help="random tensors, no disk I/O (same as --data-backend synthetic)")
    add("--synthetic-train-size", dest="synthetic_train_size", type=_positive_int,
        help="images per synthetic training epoch")
    add("--synthetic-val-size", dest="synthetic_val_size", type=_positive_int,
        help="images in the synthetic validation set")
    add("--num-classes", dest="num_classes", type=_positive_int,
        help="classes of the model's head; taken from the dataset when not given")
    add("--train-crop-size", dest="train_crop_size", type=_positive_int, help="RandomResizedCrop")
    add("--train-crop-scale", dest="train_crop_scale", type=_fraction, nargs=2,
        metavar=("MIN", "MAX"), help="RandomResizedCrop's range of the image area kept")
    add("--hflip", dest="hflip", type=_probability, help="probability of a horizontal flip")
    add("--val-resize-size", dest="val_resize_size", type=_positive_int, help="val Resize")
    add("--val-crop-size", dest="val_crop_size", type=_positive_int, help="val CenterCrop")
    add("--interpolation", dest="interpolation", type=_lower_choice(INTERPOLATIONS),
        help="resize interpolation")
    add("--auto-augment", dest="auto_augment", type=_lower_choice(AUTO_AUGMENT_POLICIES),
        help="augmentation policy: " + ", ".join(AUTO_AUGMENT_POLICIES))
    add("--ra-magnitude", dest="ra_magnitude", type=int, help="RandAugment magnitude")
    add("--augmix-severity", dest="augmix_severity", type=int, help="AugMix severity")
    add("--random-erase", dest="random_erase", type=_probability,
        help="probability of RandomErasing")
    add("--ra-sampler", dest="ra_sampler", action=argparse.BooleanOptionalAction,
        help="repeated augmentation: each image --ra-reps times per epoch, on different ranks")
    add("--ra-reps", dest="ra_reps", type=_positive_int, help="repetitions of --ra-sampler")
    add("--progressive-resize-from", dest="progressive_resize_from", type=_positive_int,
        help="train crops grow from this size to --train-crop-size (progressive resizing)")
    add("--progressive-resize-ramp", dest="progressive_resize_ramp", type=_fraction, nargs=2,
        metavar=("START", "END"), help="fractions of the run between which the crops grow")
    add("--use-v2", dest="use_v2", action=argparse.BooleanOptionalAction,
        help="torchvision.transforms.v2 in the pytorch backend")
    add("--cache-dataset", dest="cache_dataset", action=argparse.BooleanOptionalAction,
        help="keep the dataset's file index in --output-dir and reuse it on later starts")
    add("-j", "--workers", dest="workers", type=int, help="DataLoader workers per process")

    g = p.add_argument_group("model and precision")
    add("--model", dest="model", help="torchvision classification model")
    add("--weights", dest="weights", help="initial weights: a local file, or a torchvision "
        "weights name (e.g. ResNet50_Weights.IMAGENET1K_V2) already in torch's hub cache")
    add("--zero-init-residual", dest="zero_init_residual", action=argparse.BooleanOptionalAction,
        help="zero-init the last BN of every residual block")
    add("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction,
        help="NHWC memory format")
    add("--compile", dest="compile", action=argparse.BooleanOptionalAction, help="torch.compile")
    add("--compile-mode", dest="compile_mode", choices=COMPILE_MODES,
        help="torch.compile's mode, with --compile: reduce-overhead adds CUDA graphs, "
             "max-autotune searches kernels (minutes of compiling)")
    add("--precision", dest="precision", choices=PRECISIONS,
        help="amp = fp16 autocast with a GradScaler; bf16 = bf16 autocast")
    g.add_argument("--amp", dest="precision", action="store_const", const="amp",
                   help="same as --precision amp")
    add("--sync-bn", dest="sync_bn", action=argparse.BooleanOptionalAction,
        help="synchronise BatchNorm statistics across processes")

    g = p.add_argument_group("placement and launch")
    add("--device", dest="device", choices=("auto", "cuda", "cpu"), help="auto = cuda if any")
    add("--dist-backend", dest="dist_backend", choices=("nccl", "gloo"),
        help="default: nccl on GPU, gloo on CPU")
    add("--nproc-per-node", dest="nproc_per_node", type=_positive_int,
        help="processes on this machine (default: the preset's, else 1); more than one "
        "launches them through torchrun")
    add("--nnodes", dest="nnodes", type=_positive_int, help="machines in the job")
    add("--node-rank", dest="node_rank", type=int, help="this machine's index, 0 is the master")
    add("--master-addr", dest="master_addr", help="address of the node with --node-rank 0")
    add("--master-port", dest="master_port", type=int, help="rendezvous port on the master")

    g = p.add_argument_group("optimisation")
    add("-b", "--batch-size", dest="batch_size", type=_positive_int, help="images per process")
    add("--global-batch-size", dest="global_batch_size", type=_positive_int,
        help="images per step over all processes, instead of --batch-size")
    add("--epochs", dest="epochs", type=_positive_int, help="training epochs")
    add("--lr", dest="lr", type=_non_negative_float, help="peak learning rate; default: "
        "--base-lr scaled to the global batch")
    add("--base-lr", dest="base_lr", type=_non_negative_float,
        help="learning rate per 256 images, used when --lr is not given")
    add("--opt", dest="opt", type=_lower_choice(OPTIMIZERS), help="optimizer")
    add("--momentum", dest="momentum", type=_non_negative_float, help="SGD momentum")
    add("--nesterov", dest="nesterov", action=argparse.BooleanOptionalAction, help="Nesterov")
    add("--wd", "--weight-decay", dest="weight_decay", type=_non_negative_float,
        help="weight decay")
    add("--norm-weight-decay", dest="norm_weight_decay", type=_non_negative_float,
        help="weight decay of normalisation layers (0 excludes them); default: --wd")
    add("--bias-weight-decay", dest="bias_weight_decay", type=_non_negative_float,
        help="weight decay of biases (0 excludes them); default: --wd")
    add("--transformer-embedding-decay", dest="transformer_embedding_decay",
        type=_non_negative_float, help="weight decay of vision transformers' embeddings")
    add("--clip-grad-norm", dest="clip_grad_norm", type=_non_negative_float,
        help="clip the gradients' global norm to this")
    add("--lr-scheduler", dest="lr_scheduler", type=_scheduler,
        help="after the warm-up: " + ", ".join(LR_SCHEDULERS))
    add("--lr-steps", dest="lr_steps", type=_positive_int, nargs="+",
        help="epochs at which the step schedule multiplies the LR by --lr-gamma")
    add("--lr-step-size", dest="lr_step_size", type=_positive_int,
        help="step schedule: multiply the LR by --lr-gamma every N epochs")
    add("--lr-gamma", dest="lr_gamma", type=_non_negative_float,
        help="decay factor of the step and exponential schedules")
    add("--lr-min", dest="lr_min", type=_non_negative_float,
        help="final LR of the cosine and linear schedules")
    add("--lr-warmup-epochs", dest="lr_warmup_epochs", type=_non_negative_float,
        help="warm-up length in epochs, stepped per iteration")
    add("--lr-warmup-method", dest="lr_warmup_method", type=_lower_choice(LR_WARMUP_METHODS),
        help="linear: rise from --lr-warmup-decay x LR; constant: stay there")
    add("--lr-warmup-decay", dest="lr_warmup_decay", type=_non_negative_float,
        help="warm-up starts at this fraction of the LR")
    add("--label-smoothing", dest="label_smoothing", type=_non_negative_float,
        help="label smoothing")
    add("--mixup-alpha", dest="mixup_alpha", type=_non_negative_float, help="mixup alpha, 0=off")
    add("--cutmix-alpha", dest="cutmix_alpha", type=_non_negative_float,
        help="cutmix alpha, 0=off")
    add("--model-ema", dest="model_ema", action=argparse.BooleanOptionalAction,
        help="keep an exponential moving average of the weights")
    add("--model-ema-steps", dest="model_ema_steps", type=_positive_int,
        help="iterations between EMA updates")
    add("--model-ema-decay", dest="model_ema_decay", type=_non_negative_float,
        help="EMA decay per epoch-normalised step")

    g = p.add_argument_group("evaluation, checkpoints and reporting")
    add("--eval-every", dest="eval_every", type=_positive_int,
        help="evaluate every N epochs (and always after the last)")
    add("--precise-bn-images", dest="precise_bn_images", type=int,
        help="re-estimate BatchNorm statistics on this many training images before each "
        "evaluation (0: off)")
    add("--test-only", dest="test_only", action=argparse.BooleanOptionalAction,
        help="only evaluate the checkpoint (--resume, else the newest in --output-dir)")
    add("--output-dir", dest="output_dir", help="checkpoints, metrics.jsonl; resumed from")
    add("--resume", dest="resume", help="checkpoint to start from instead of the newest one")
    add("--keep-checkpoints", dest="keep_checkpoints", type=_positive_int,
        help="per-epoch checkpoints kept (best.pt is kept apart)")
    add("--checkpoint-interval-minutes", dest="checkpoint_interval_minutes",
        type=_positive_number, help="also save a mid-epoch checkpoint this often, at a report "
        "(--print-freq); one is always saved on SIGTERM")
    add("--print-freq", dest="print_freq", type=_positive_int, help="log every N steps")
    add("--metrics-port", dest="metrics_port", type=_port,
        help="rank 0 serves its progress as Prometheus text at :PORT/metrics (0: off)")
    add("--termination-log", dest="termination_log",
        help="file rank 0 writes its final figures to (Kubernetes: /dev/termination-log)")
    add("--seed", dest="seed", type=int, help="random seed")
    add("--use-deterministic-algorithms", dest="use_deterministic_algorithms",
        action=argparse.BooleanOptionalAction, help="torch.use_deterministic_algorithms")

    g = p.add_argument_group(
        "torchvision options with another way here", "accepted with torchvision's default "
        "value, which is what this trainer does; any other value is an error that names the "
        "way to get it")
    for flag, (default, _why) in TORCHVISION_ONLY.items():
        g.add_argument(flag, dest=flag[2:].replace("-", "_"), type=str,
                       help=f"only {default!r}")
    return p


# torchvision options whose job something else does here: their default is accepted (it is
# what this trainer does anyway), any other value stops with the better way.
TORCHVISION_ONLY: dict[str, tuple[str, str]] = {
    "--start-epoch": ("0", "the epoch to start from is the checkpoint's: the newest in "
                      "--output-dir, or --resume FILE"),
    "--world-size": ("1", "the processes are --nnodes x --nproc-per-node, which torchrun "
                     "or the operator turn into WORLD_SIZE"),
    "--dist-url": ("env://", "processes meet through torchrun's environment (env://); "
                   "give --master-addr and --master-port instead"),
    "--backend": ("pil", "--data-backend pytorch decodes with PIL on the CPU; "
                  "--data-backend gpu decodes to tensors on the GPU"),
}


def _check_torchvision_only(given: dict[str, Any]) -> None:
    for flag, (default, why) in TORCHVISION_ONLY.items():
        value = given.pop(flag[2:].replace("-", "_"), None)
        if value is not None and value.lower() != default:
            raise ConfigError(f"{flag} {value}: {why}")


def _launch_values_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, key in PET_VARIABLES.items():
        if name not in env:
            continue
        if key == "master_addr":
            values[key] = env[name]
            continue
        try:
            values[key] = int(env[name])
        except ValueError:
            raise ConfigError(f"{name}={env[name]!r} in the environment must be a number") from None
    return values


def parse_config(argv: list[str], env: Mapping[str, str] | None = None) -> TrainConfig:
    """Parse a command line into a validated TrainConfig (ConfigError on bad input)."""
    given = vars(build_parser().parse_args(argv))
    _check_torchvision_only(given)
    values: dict[str, Any] = {}
    if given.get("preset"):
        values.update(PRESETS[given["preset"]])
    values.update(_launch_values_from_env(env or {}))
    values.update(given)
    if "lr_scheduler" not in given and given.keys() & {"lr_steps", "lr_step_size"}:
        values["lr_scheduler"] = "step"  # what those options mean, here as in torchvision
    if values.get("opt") == "sgd_nesterov":
        values["opt"], values["nesterov"] = "sgd", True
    for name in ("lr_steps", "train_crop_scale", "progressive_resize_ramp"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


# Training BatchNorm normalises each process's batch by its own mean and variance: with
# one image they are that image's (or, on a 1x1 feature map, undefined: a traceback).
_ONE_IMAGE = "{}: BatchNorm cannot train on one image; use at least 2"


def validate(cfg: TrainConfig) -> None:
    """Checks that need no dataset and no process group."""
    if cfg.data_backend != "synthetic" and not cfg.data_path:
        raise ConfigError("--data-path is required (or --synthetic for generated data)")
    if cfg.workers < 0:
        raise ConfigError(f"--workers must not be negative, got {cfg.workers}")
    if cfg.compile_mode != "default" and not cfg.compile:
        raise ConfigError(f"--compile-mode {cfg.compile_mode} needs --compile")
    if cfg.lr_steps is not None and list(cfg.lr_steps) != sorted(set(cfg.lr_steps)):
        raise ConfigError(f"--lr-steps must increase, got {' '.join(map(str, cfg.lr_steps))}")
    if cfg.lr_warmup_epochs is not None and cfg.lr_warmup_epochs >= cfg.epochs:
        raise ConfigError(
            f"--lr-warmup-epochs ({cfg.lr_warmup_epochs:g}) must be shorter than "
            f"--epochs ({cfg.epochs})"
        )
    if not 0 <= cfg.node_rank < cfg.nnodes:
        raise ConfigError(f"--node-rank must be in 0..{cfg.nnodes - 1}, got {cfg.node_rank}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    low, high = cfg.train_crop_scale
    if not 0 < low <= high:
        raise ConfigError(f"--train-crop-scale must be 0 < MIN <= MAX <= 1, got {low:g} {high:g}")
    start, end = cfg.progressive_resize_ramp
    if not start <= end:
        raise ConfigError(f"--progressive-resize-ramp must not end before it starts, got "
                          f"{start:g} {end:g}")
    if cfg.progressive_resize_from is not None and \
            cfg.progressive_resize_from > cfg.train_crop_size:
        raise ConfigError(f"--progressive-resize-from {cfg.progressive_resize_from} is larger "
                          f"than --train-crop-size {cfg.train_crop_size}, the size it grows to")
    if not 0 <= cfg.ra_magnitude <= 30:  # RandAugment's 31 magnitude bins
        raise ConfigError(f"--ra-magnitude must be in 0..30, got {cfg.ra_magnitude}")
    if not 1 <= cfg.augmix_severity <= 10:
        raise ConfigError(f"--augmix-severity must be in 1..10, got {cfg.augmix_severity}")
    if cfg.precise_bn_images < 0:
        raise ConfigError(f"--precise-bn-images must not be negative, got {cfg.precise_bn_images}")
    if cfg.model_ema and not 0 < cfg.model_ema_decay < 1:
        raise ConfigError(f"--model-ema-decay must be in (0, 1), got {cfg.model_ema_decay}")
    if cfg.global_batch_size is None and cfg.batch_size == 1 and not cfg.test_only:
        raise ConfigError(_ONE_IMAGE.format("--batch-size 1 per process"))


def validate_world(cfg: TrainConfig, world_size: int) -> None:
    """Checks that need the number of processes."""
    if cfg.global_batch_size is not None:
        if cfg.global_batch_size < world_size:
            raise ConfigError(
                f"--global-batch-size {cfg.global_batch_size} is smaller than the "
                f"{world_size} processes of the job: every process needs at least one image"
            )
        if cfg.global_batch_size % world_size:
            raise ConfigError(
                f"--global-batch-size {cfg.global_batch_size} does not divide evenly over "
                f"{world_size} processes"
            )
        if cfg.per_process_batch(world_size) == 1 and not cfg.test_only:
            raise ConfigError(_ONE_IMAGE.format(
                f"--global-batch-size {cfg.global_batch_size} over {world_size} processes is 1 "
                f"image per process"))
