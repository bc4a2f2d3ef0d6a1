"""torchvision's classification train.py command lines work here unchanged.

TORCHVISION is its get_args_parser() (references/classification/train.py on pytorch/vision's
main branch, torchvision 0.2x): every option, with its default. COMMAND_LINES are the
training commands of that folder's README, as published. Where our default differs, the
difference is a row of docs/trainer.md's table "Where the defaults differ from
torchvision", which this file checks against both sides.
"""

from __future__ import annotations

import argparse
import shlex

import pytest
from test_docs import TRAINER, table, ticked, value

from resnet50_trainer.config import (
    LR_SCHEDULER_ALIASES,
    TORCHVISION_ONLY,
    TrainConfig,
    build_parser,
    parse_config,
)
from resnet50_trainer.errors import ConfigError

TORCHVISION: dict[str, object] = {
    "--data-path": "/datasets01/imagenet_full_size/061417/",
    "--model": "resnet18",
    "--device": "cuda",
    "-b": 32, "--batch-size": 32,
    "--epochs": 90,
    "-j": 16, "--workers": 16,
    "--opt": "sgd",
    "--lr": 0.1,
    "--momentum": 0.9,
    "--wd": 1e-4, "--weight-decay": 1e-4,
    "--norm-weight-decay": None,
    "--bias-weight-decay": None,
    "--transformer-embedding-decay": None,
    "--label-smoothing": 0.0,
    "--mixup-alpha": 0.0,
    "--cutmix-alpha": 0.0,
    "--lr-scheduler": "steplr",
    "--lr-warmup-epochs": 0,
    "--lr-warmup-method": "constant",
    "--lr-warmup-decay": 0.01,
    "--lr-step-size": 30,
    "--lr-gamma": 0.1,
    "--lr-min": 0.0,
    "--print-freq": 10,
    "--output-dir": ".",
    "--resume": "",
    "--start-epoch": 0,
    "--cache-dataset": False,
    "--sync-bn": False,
    "--test-only": False,
    "--auto-augment": None,
    "--ra-magnitude": 9,
    "--augmix-severity": 3,
    "--random-erase": 0.0,
    "--amp": False,
    "--world-size": 1,
    "--dist-url": "env://",
    "--model-ema": False,
    "--model-ema-steps": 32,
    "--model-ema-decay": 0.99998,
    "--use-deterministic-algorithms": False,
    "--interpolation": "bilinear",
    "--val-resize-size": 256,
    "--val-crop-size": 224,
    "--train-crop-size": 224,
    "--clip-grad-norm": None,
    "--ra-sampler": False,
    "--ra-reps": 3,
    "--weights": None,
    "--backend": "PIL",
    "--use-v2": False,
}

# The README's training commands ($MODEL filled in with one of its models).
COMMAND_LINES = [
    "torchrun --nproc_per_node=8 train.py --model resnet50",
    "torchrun --nproc_per_node=8 train.py --model vgg16 --lr 1e-2",
    "torchrun --nproc_per_node=8 train.py --model resnext50_32x4d --epochs 100",
    "torchrun --nproc_per_node=8 train.py --model resnext50_32x4d --epochs 100 --amp",
    "torchrun --nproc_per_node=8 train.py --model mobilenet_v2 --epochs 300 --lr 0.045 "
    "--wd 0.00004 --lr-step-size 1 --lr-gamma 0.98",
    "torchrun --nproc_per_node=8 train.py --model mobilenet_v3_large --epochs 600 --opt rmsprop "
    "--batch-size 128 --lr 0.064 --wd 0.00001 --lr-step-size 2 --lr-gamma 0.973 "
    "--auto-augment imagenet --random-erase 0.2",
    "torchrun --nproc_per_node=8 train.py --model efficientnet_v2_s --batch-size 128 --lr 0.5 "
    "--lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear "
    "--auto-augment ta_wide --epochs 600 --random-erase 0.1 --label-smoothing 0.1 "
    "--mixup-alpha 0.2 --cutmix-alpha 1.0 --weight-decay 0.00002 --norm-weight-decay 0.0 "
    "--train-crop-size 300 --model-ema --val-crop-size 384 --val-resize-size 384 "
    "--ra-sampler --ra-reps 4",
    "torchrun --nproc_per_node=8 train.py --model regnet_y_400mf --epochs 100 --batch-size 128 "
    "--wd 0.00005 --lr=0.8 --lr-scheduler=cosineannealinglr --lr-warmup-method=linear "
    "--lr-warmup-epochs=5 --lr-warmup-decay=0.1",
    "torchrun --nproc_per_node=8 train.py --model vit_b_16 --epochs 300 --batch-size 512 "
    "--opt adamw --lr 0.003 --wd 0.3 --lr-scheduler cosineannealinglr --lr-warmup-method linear "
    "--lr-warmup-epochs 30 --lr-warmup-decay 0.033 --amp --label-smoothing 0.11 "
    "--mixup-alpha 0.2 --auto-augment ra --clip-grad-norm 1 --ra-sampler --cutmix-alpha 1.0 "
    "--model-ema",
    "torchrun --nproc_per_node=8 train.py --model convnext_tiny --batch-size 128 --opt adamw "
    "--lr 1e-3 --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear "
    "--auto-augment ta_wide --epochs 600 --random-erase 0.1 --label-smoothing 0.1 "
    "--mixup-alpha 0.2 --cutmix-alpha 1.0 --weight-decay 0.05 --norm-weight-decay 0.0 "
    "--train-crop-size 176 --model-ema --val-resize-size 232 --ra-sampler --ra-reps 4",
    "torchrun --nproc_per_node=8 train.py --model swin_t --epochs 300 --batch-size 128 "
    "--opt adamw --lr 0.001 --weight-decay 0.05 --norm-weight-decay 0.0  --bias-weight-decay 0.0 "
    "--transformer-embedding-decay 0.0 --lr-scheduler cosineannealinglr --lr-min 0.00001 "
    "--lr-warmup-method linear  --lr-warmup-epochs 20 --lr-warmup-decay 0.01 --amp "
    "--label-smoothing 0.1 --mixup-alpha 0.8 --clip-grad-norm 5.0 --cutmix-alpha 1.0 "
    "--random-erase 0.25 --interpolation bicubic --auto-augment ta_wide --model-ema "
    "--ra-sampler --ra-reps 4  --val-resize-size 224",
    "torchrun --nproc_per_node=8 train.py --batch-size=128 --lr=0.5 "
    "--lr-scheduler=cosineannealinglr --lr-warmup-epochs=5 --lr-warmup-method=linear "
    "--auto-augment=ta_wide --epochs=600 --random-erase=0.1 --weight-decay=0.00002 "
    "--norm-weight-decay=0.0 --label-smoothing=0.1 --mixup-alpha=0.2 --cutmix-alpha=1.0 "
    "--train-crop-size=176 --model-ema --val-resize-size=232 --ra-sampler --ra-reps=4",
    "torchrun --nproc_per_node=8 train.py --model inception_v3 --test-only "
    "--weights Inception_V3_Weights.IMAGENET1K_V1",
]

# What each torchvision option sets here, when it is not the field of the same name.
FIELD = {"--wd": "weight_decay", "-b": "batch_size", "-j": "workers", "--amp": "precision"}


def ours(argv: list[str]) -> TrainConfig:
    return parse_config([*argv, "--data-path", "/data"])


def _field(flag: str) -> str:
    return FIELD.get(flag, flag.lstrip("-").replace("-", "_"))


def _meaning(flag: str, default: object) -> object:
    """torchvision's default as the value it means here."""
    if flag == "--amp":
        return "amp" if default else "fp32"
    if flag == "--lr-scheduler":
        return LR_SCHEDULER_ALIASES[str(default)]
    if flag == "--resume":
        return default or None
    return default


def differences() -> dict[str, tuple[str, str]]:
    rows = table(TRAINER, "### Where the defaults differ from torchvision")
    return {flag: (r["torchvision"], r["Here"]) for r in rows for flag in ticked(r["Option"])}


def test_every_torchvision_option_is_an_option_here():
    ours_flags = {f for a in build_parser()._actions for f in a.option_strings}
    missing = sorted(set(TORCHVISION) - ours_flags)
    assert not missing, f"resnet50-train lacks torchvision's {', '.join(missing)}"


@pytest.mark.parametrize("flag", sorted(set(TORCHVISION) - set(TORCHVISION_ONLY)))
def test_each_default_is_torchvisions_or_a_documented_difference(flag):
    theirs = _meaning(flag, TORCHVISION[flag])
    default = {f: getattr(TrainConfig(), f) for f in TrainConfig.__dataclass_fields__}
    here = default[_field(flag)]
    documented = differences()
    if here == theirs:
        assert flag not in documented, f"{TRAINER}: {flag} is documented as differing from " \
            f"torchvision, but both default to {theirs!r}"
        return
    assert flag in documented, f"{flag}: torchvision's default is {TORCHVISION[flag]!r}, ours " \
        f"{here!r}; document why in {TRAINER} '### Where the defaults differ from torchvision'"
    their_cell, our_cell = documented[flag]
    assert value(their_cell) in (TORCHVISION[flag], theirs), \
        f"{TRAINER}: torchvision's {flag} defaults to {TORCHVISION[flag]!r}, not {their_cell}"
    shown = value(our_cell)
    assert shown == here or (here is None and isinstance(shown, str)), \
        f"{TRAINER}: our {flag} defaults to {here!r} (TrainConfig), not {our_cell}"


def test_options_done_another_way_accept_torchvisions_default():
    argv = [a for flag in TORCHVISION_ONLY for a in (flag, str(TORCHVISION[flag]))]
    ours(argv)
    for flag, (default, _) in TORCHVISION_ONLY.items():
        assert default == str(TORCHVISION[flag]).lower()


@pytest.mark.parametrize("line", COMMAND_LINES, ids=lambda line: line.split()[4])
def test_the_readmes_command_lines_parse_unchanged(line):
    launcher, script, *argv = shlex.split(line)[:1] + shlex.split(line)[1:]
    nproc = int(script.split("=")[1])
    assert argv[0] == "train.py"
    cfg = ours(["--nproc-per-node", str(nproc), *argv[1:]])
    # Spot checks of meaning: the same global batch and learning rate as torchvision's run.
    batch = int(TORCHVISION["--batch-size"]) if "--batch-size" not in line else cfg.batch_size
    assert cfg.per_process_batch(nproc) == batch
    given_lr = next((float(a.split("=")[1]) for a in argv if a.startswith("--lr=")), None)
    if "--lr " in line or given_lr is not None:
        assert cfg.lr == (given_lr if given_lr is not None else
                          float(argv[argv.index("--lr") + 1]))
    else:  # torchvision's 0.1 at its 8 x 32 images is our 0.1 per 256 images
        assert cfg.peak_lr(nproc) == pytest.approx(0.1 * batch * nproc / 256)


def test_the_v1_command_line_trains_torchvisions_schedule():
    cfg = ours(["--nproc-per-node", "8", "--model", "resnet50", "--lr-scheduler", "steplr"])
    assert (cfg.step_milestones(), cfg.warmup_epochs(8), cfg.peak_lr(8)) == ((30, 60), 0.0, 0.1)
    assert ours(["--lr-step-size", "30"]).step_milestones() == (30, 60)


def test_the_v2_command_line_is_the_v2_preset():
    v2_line = COMMAND_LINES[-2]
    argv = shlex.split(v2_line)[3:]
    from_line = ours(["--model", "resnet50", "--nproc-per-node", "8", *argv])
    preset = ours(["--preset", "torchvision-v2"])
    # The preset also trains as torchvision does where train.py has no option for it.
    ignored = {"preset", "precise_bn_images", "zero_init_residual"}
    differ = {f for f in TrainConfig.__dataclass_fields__ if f not in ignored
              and getattr(from_line, f) != getattr(preset, f)}
    assert not differ, f"the torchvision-v2 preset differs from torchvision's V2 command line " \
        f"in {sorted(differ)}"


def test_weights_that_are_not_cached_say_so_and_nothing_is_downloaded(tmp_path, monkeypatch):
    import torch

    from resnet50_trainer.model import load_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import torchvision

    model = torchvision.models.resnet18(num_classes=1000)
    with pytest.raises(ConfigError, match=r"--weights ResNet18_Weights.IMAGENET1K_V1: .*"
                       r"resnet18-f37072fd.pth is missing and this trainer never downloads; "
                       r"copy https://download.pytorch.org/models/resnet18-f37072fd.pth there"):
        load_weights(model, "ResNet18_Weights.IMAGENET1K_V1", "resnet18")
    with pytest.raises(ConfigError, match="neither a file nor a torchvision weights name"):
        load_weights(model, "ResNet18_Weights.NOPE", "resnet18")
    # Once in the cache (where torchvision's download would put it), the name loads.
    reference = torchvision.models.resnet18(num_classes=1000)
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    load_weights(model, "IMAGENET1K_V1", "resnet18")
    assert torch.equal(model.fc.weight, reference.fc.weight)


def test_weights_from_a_file_must_fit_the_model(tmp_path):
    import torch
    import torchvision

    from resnet50_trainer.model import load_weights

    source = torchvision.models.resnet18(num_classes=10)
    # As torchvision's train.py saves it: a DDP model's keys, and its argparse.Namespace.
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()},
                "args": argparse.Namespace(model="resnet18"), "epoch": 3},
               tmp_path / "ddp-checkpoint.pth")
    target = torchvision.models.resnet18(num_classes=10)
    load_weights(target, str(tmp_path / "ddp-checkpoint.pth"), "resnet18")
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    with pytest.raises(ConfigError, match=r"do not fit --model resnet18 with this --num-classes: "
                       r"fc.weight: \(10, 512\) in the file, \(5, 512\) here"):
        load_weights(torchvision.models.resnet18(num_classes=5),
                     str(tmp_path / "ddp-checkpoint.pth"), "resnet18")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ConfigError, match="holds no state dict"):
        load_weights(target, str(tmp_path / "tensor.pt"), "resnet18")
