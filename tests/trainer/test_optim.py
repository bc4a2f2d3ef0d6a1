import pytest
from torch import nn

from resnet50_trainer.config import parse_config
from resnet50_trainer.optim import lr_at, parameter_groups

STEPS = 10  # per epoch


def cfg(*args):
    return parse_config(["--synthetic", "--epochs", "90", *args])


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (299, 1.0), (300, 0.1), (599, 0.1), (600, 0.01), (899, 0.01)],
)
def test_step_schedule_divides_by_ten_every_30_epochs(step, expected):
    assert lr_at(step, cfg(), 1.0, STEPS) == pytest.approx(expected)


def test_step_schedule_milestones_are_configurable():
    c = cfg("--lr-steps", "30", "60", "80")
    assert lr_at(799, c, 1.0, STEPS) == pytest.approx(0.01)
    assert lr_at(800, c, 1.0, STEPS) == pytest.approx(0.001)


def test_warmup_is_linear_per_iteration_then_hands_over():
    c = cfg("--lr-warmup-epochs", "5", "--lr-warmup-decay", "0.01")
    assert lr_at(0, c, 2.0, STEPS) == pytest.approx(0.02)
    assert lr_at(25, c, 2.0, STEPS) == pytest.approx(2.0 * (0.01 + 0.99 * 0.5))
    assert lr_at(49, c, 2.0, STEPS) < lr_at(50, c, 2.0, STEPS) == pytest.approx(2.0)


def test_cosine_goes_from_peak_to_floor():
    c = cfg("--lr-scheduler", "cosine", "--lr-min", "0.001", "--lr-warmup-epochs", "10")
    assert lr_at(100, c, 1.0, STEPS) == pytest.approx(1.0)
    assert lr_at(100 + 400, c, 1.0, STEPS) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_at(900, c, 1.0, STEPS) == pytest.approx(0.001)
    values = [lr_at(s, c, 1.0, STEPS) for s in range(100, 900)]
    assert values == sorted(values, reverse=True)


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
