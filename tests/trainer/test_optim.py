import pytest
import torch
from torch import nn

from resnet50_trainer.config import parse_config
from resnet50_trainer.optim import (
    build_optimizer,
    lr_at,
    parameter_groups,
    schedule_summary,
    schedule_warning,
)

STEPS = 10  # per epoch


def cfg(*args):
    return parse_config(["--synthetic", "--epochs", "90", *args])


def lr(c, step, peak=1.0, world_size=1):
    return lr_at(step, c, peak, STEPS, c.warmup_epochs(world_size))


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (299, 1.0), (300, 0.1), (599, 0.1), (600, 0.01), (899, 0.01)],
)
def test_torchvisions_step_size_30_divides_by_ten_every_30_epochs(step, expected):
    assert lr(cfg("--lr-step-size", "30"), step) == pytest.approx(expected)


def test_the_step_schedule_without_epochs_decays_at_thirds_of_the_run():
    """torchvision's 30 and 60 at its 90 epochs; inside the run at any other length."""
    assert cfg("--lr-scheduler", "steplr").step_milestones() == (30, 60)
    short = parse_config(["--synthetic", "--epochs", "12", "--lr-scheduler", "step"])
    assert short.step_milestones() == (4, 8)
    assert [lr(short, e * STEPS) for e in (3, 4, 8)] == pytest.approx([1.0, 0.1, 0.01])


def test_step_options_mean_the_step_schedule_unless_another_is_named():
    assert cfg("--lr-step-size", "2").lr_scheduler == "step"
    assert cfg("--lr-steps", "5").lr_scheduler == "step"
    assert cfg("--lr-steps", "5", "--lr-scheduler", "cosine").lr_scheduler == "cosine"


def test_step_schedule_milestones_are_configurable():
    c = cfg("--lr-steps", "30", "60", "80")
    assert lr(c, 799) == pytest.approx(0.01)
    assert lr(c, 800) == pytest.approx(0.001)


def test_the_default_schedule_is_cosine_over_the_run_whatever_its_length():
    for epochs in (2, 12, 90):
        c = parse_config(["--synthetic", "--epochs", str(epochs)])
        total = epochs * STEPS
        assert lr(c, 0) == pytest.approx(1.0)
        assert lr(c, total // 2) == pytest.approx(0.5)
        assert lr(c, total - 1) < 0.01


def test_warmup_is_linear_per_iteration_then_hands_over():
    c = cfg("--lr-warmup-epochs", "5", "--lr-warmup-decay", "0.01", "--lr-scheduler", "step")
    assert lr(c, 0, 2.0) == pytest.approx(0.02)
    assert lr(c, 25, 2.0) == pytest.approx(2.0 * (0.01 + 0.99 * 0.5))
    assert lr(c, 49, 2.0) < lr(c, 50, 2.0) == pytest.approx(2.0)


def test_constant_warmup_holds_the_decayed_lr():
    c = cfg("--lr-warmup-epochs", "2", "--lr-warmup-method", "constant", "--lr-warmup-decay", "0.1")
    assert [lr(c, s) for s in (0, 19)] == pytest.approx([0.1, 0.1])
    assert lr(c, 20) == pytest.approx(1.0)


def test_a_large_scaled_lr_warms_up_by_itself_for_a_tenth_of_the_run_at_most_5_epochs():
    big = parse_config(["--synthetic", "-b", "256"])  # x 8 processes: lr 0.8
    assert big.warmup_epochs(world_size=8) == 5.0
    assert big.warmup_epochs(world_size=1) == 0.0  # lr 0.1: torchvision's, no warm-up
    short = parse_config(["--synthetic", "-b", "256", "--epochs", "12"])
    assert short.warmup_epochs(world_size=8) == pytest.approx(1.2)
    assert parse_config(["--synthetic", "-b", "256", "--lr-warmup-epochs", "0"]) \
        .warmup_epochs(world_size=8) == 0.0


def test_cosine_goes_from_peak_to_floor():
    c = cfg("--lr-scheduler", "cosine", "--lr-min", "0.001", "--lr-warmup-epochs", "10")
    assert lr(c, 100) == pytest.approx(1.0)
    assert lr(c, 100 + 400) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr(c, 900) == pytest.approx(0.001)
    values = [lr(c, s) for s in range(100, 900)]
    assert values == sorted(values, reverse=True)


def test_linear_and_exponential_schedules():
    linear = cfg("--lr-scheduler", "linearlr", "--lr-warmup-epochs", "0")
    assert [lr(linear, s) for s in (0, 450, 900)] == pytest.approx([1.0, 0.5, 0.0])
    exponential = cfg("--lr-scheduler", "ExponentialLR", "--lr-gamma", "0.9")
    assert [lr(exponential, s) for s in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.9, 0.81])


def test_a_schedule_that_never_decays_inside_the_run_is_warned_about():
    c = parse_config(["--synthetic", "--epochs", "12", "--lr-steps", "30", "60"])
    assert "never decays: the step schedule decays at epochs 30, 60, not inside the " \
        "12-epoch run" in schedule_warning(c)
    assert "decays every 30 epochs, not inside the 12-epoch run" in schedule_warning(
        parse_config(["--synthetic", "--epochs", "12", "--lr-step-size", "30"]))
    assert schedule_warning(cfg()) is None
    assert schedule_warning(cfg("--lr-scheduler", "step")) is None
    assert schedule_summary(cfg("--lr-scheduler", "step")) == "x0.1 at epochs 30, 60"


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4, 2))


def test_weight_decay_of_norm_layers_and_biases_can_be_switched_off():
    groups = parameter_groups(_model(), cfg("--norm-weight-decay", "0", "--bias-weight-decay", "0"))
    by_wd = {g["weight_decay"]: [tuple(p.shape) for p in g["params"]] for g in groups}
    # conv weight and linear weight decay; BN weight, BN bias and linear bias do not.
    assert sorted(by_wd[1e-4]) == [(2, 4), (4, 3, 3, 3)]
    assert sorted(by_wd[0.0]) == [(2,), (4,), (4,)]


def test_one_group_when_decay_is_uniform():
    groups = parameter_groups(_model(), cfg())
    assert len(groups) == 1 and len(groups[0]["params"]) == 5


def test_transformer_embeddings_get_their_own_decay():
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=1,
                            hidden_dim=8, mlp_dim=8, num_classes=2)
    groups = parameter_groups(vit, cfg("--transformer-embedding-decay", "0"))
    embeddings = {id(vit.class_token), id(vit.encoder.pos_embedding)}
    zero = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    # torchvision names the positional embedding pos_embedding: only class_token matches,
    # exactly as in torchvision's own _get_params grouping by these names.
    assert id(vit.class_token) in zero and zero <= embeddings


@pytest.mark.parametrize(("opt", "kind"), [("sgd", torch.optim.SGD),
                                           ("SGD_nesterov", torch.optim.SGD),
                                           ("rmsprop", torch.optim.RMSprop),
                                           ("adamw", torch.optim.AdamW)])
def test_torchvisions_optimizers(opt, kind):
    c = cfg("--opt", opt)
    optimizer = build_optimizer(_model(), c, torch.device("cpu"))
    assert type(optimizer) is kind
    assert optimizer.defaults.get("nesterov", False) == ("nesterov" in opt.lower())


def test_rank_0_logs_the_schedule_and_warns_once(caplog):
    import logging

    from resnet50_trainer.distributed import Placement
    from resnet50_trainer.report import Reporter
    from resnet50_trainer.train import Totals

    c = parse_config(["--synthetic", "--epochs", "12", "--lr-step-size", "30"])
    for rank in (0, 1):
        where = Placement(rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu"))
        with caplog.at_level(logging.INFO):
            Reporter(c, where).training(10, 0.025, 0.0, Totals())
    lines = [r.getMessage() for r in caplog.records]
    assert "Learning rate: peak 0.025, x0.1 every 30 epochs after no warm-up" in lines
    warnings = [line for line in lines if line.startswith("Warning: the learning rate never")]
    assert len(warnings) == 1
