"""The operator-trainer contract (resnet50_trainer.contract) holds on both sides, and the
operator runs without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from resnet50_operator import reconcile, render
from resnet50_operator.settings import OperatorSettings
from resnet50_trainer import contract, errors
from resnet50_trainer.config import PRESETS, build_parser, parse_config

EXAMPLES = sorted((Path(__file__).parent.parent / "manifests" / "examples").glob("*.yaml"))


def test_preset_names_are_the_presets_of_the_trainer():
    assert sorted(contract.PRESET_NAMES) == sorted(PRESETS)


def test_every_flag_the_operator_renders_is_an_option_of_the_trainer():
    known = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert set(contract.OPERATOR_FLAGS) <= known


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_trainer_accepts_what_the_operator_renders_for_each_example(path):
    t = render.parse_training({"metadata": {"name": "r50", "namespace": "ns"},
                               **yaml.safe_load(path.read_text())})
    args = render.trainer_args(t, OperatorSettings())
    rendered = {a for a in args if a.startswith("--")} - set(t.spec.training.extra_args)
    assert rendered <= set(contract.OPERATOR_FLAGS)
    cfg = parse_config(args, {})
    assert cfg.metrics_port == OperatorSettings().metrics_port
    assert cfg.output_dir == render.checkpoint_dir(t)


def test_the_trainers_errors_exit_with_the_contracts_codes():
    assert {e.exit_code for e in (errors.ConfigError(""), errors.DataError(""),
                                  errors.AccessError(""))} == set(contract.EXIT_CLASSES)
    assert errors.TrainerError("").exit_code == contract.EXIT_CRASH


@pytest.mark.parametrize("code", sorted(contract.EXIT_CLASSES))
def test_the_operator_reports_each_exit_code_as_the_contract_says(code):
    pod = reconcile.PodView(name="r50-0", index=0, attempt=0, phase="Failed", exit_code=code,
                            container_reason="Error")
    failure = reconcile.classify(pod)
    assert (failure.reason, failure.retryable) == (contract.EXIT_CLASSES[code].reason, False)


@pytest.mark.parametrize(("code", "kubelet_reason", "reason", "retryable"), [
    (contract.EXIT_CRASH, "Error", "Error", False),
    (137, "OOMKilled", "OOMKilled", True),
    (137, "Error", "Killed", True),  # SIGKILL: retried, so it must not read as a crash
    (143, "Error", "Terminated", True),
    (129, "", "Signal", True),
])
def test_a_crash_is_final_and_a_signal_is_retried(code, kubelet_reason, reason, retryable):
    pod = reconcile.PodView(name="r50-0", index=0, attempt=0, phase="Failed", exit_code=code,
                            container_reason=kubelet_reason)
    failure = reconcile.classify(pod)
    assert (failure.reason, failure.retryable) == (reason, retryable)


# Runs in a fresh interpreter in which torch, torchvision, numpy and PIL cannot be imported:
# every operator module loads, and one training is parsed, rendered and reconciled.
WITHOUT_TORCH = """
import importlib, importlib.abc, pkgutil, sys, datetime as dt
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "numpy", "PIL"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
sys.meta_path.insert(0, Absent())
import resnet50_operator as p
for m in pkgutil.walk_packages(p.__path__, p.__name__ + "."):
    importlib.import_module(m.name)
from resnet50_operator import reconcile, render, spec
from resnet50_operator.settings import OperatorSettings
import yaml
body = yaml.safe_load(open(sys.argv[1]))
t = render.parse_training({"metadata": {"name": "r50", "namespace": "ns", "uid": "u"}, **body})
now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
d = reconcile.reconcile(t, spec.ResNet50TrainingStatus(), [], False, now, OperatorSettings())
print(len(d.actions), sorted(m for m in sys.modules if m.split(".")[0] == "resnet50_trainer"))
"""


def test_the_operator_imports_and_reconciles_without_torch():
    example = next(p for p in EXAMPLES if p.name == "resnet50-16cards.yaml")
    run = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(example)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # a Service and 2 pods; of the trainer, only the contract (and its package) was loaded
    assert run.stdout.split(" ", 1) == ["3", "['resnet50_trainer', 'resnet50_trainer.contract']\n"]
