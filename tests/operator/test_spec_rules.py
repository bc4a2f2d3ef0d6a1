"""The model refuses each bad spec of tests/bad_specs.py with the CRD rule's own message."""

from __future__ import annotations

import pytest
from bad_specs import BAD_SPECS, GOOD_CHANGES, model_field, valid_spec

from resnet50_operator import crd, render, spec
from resnet50_operator.render import parse_training
from resnet50_operator.settings import OperatorSettings
from resnet50_trainer.config import build_parser
from resnet50_trainer.contract import OPERATOR_FLAGS


def parse(spec: dict) -> render.Training:
    return parse_training({"metadata": {"name": "r50", "namespace": "ml"}, "spec": spec})


@pytest.mark.parametrize("case", BAD_SPECS, ids=lambda c: c.id)
def test_the_model_refuses_what_the_crd_rules_refuse(case):
    with pytest.raises(ValueError) as exc:
        parse(valid_spec(**case.change))
    assert f"{model_field(case.field)}: {case.message}" in str(exc.value)


def test_the_valid_spec_of_the_cases_is_valid():
    parse(valid_spec())


@pytest.mark.parametrize("change", GOOD_CHANGES, ids=str)
def test_the_model_accepts_what_the_rules_let_through(change):
    parse(valid_spec(**change))


def _rules(node):
    yield from node.get("x-kubernetes-validations", [])
    for child in node.get("properties", {}).values():
        yield from _rules(child)
    if "items" in node:
        yield from _rules(node["items"])


def test_every_rule_of_the_spec_has_a_case():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    messages = {c.message for c in BAD_SPECS}
    for rule in _rules(schema["properties"]["spec"]):
        # A messageExpression names what it refuses: a reserved variable, an option.
        if rule["message"] == spec.MSG_OPERATOR_OPTION:
            assert messages & set(spec.OPERATOR_OPTION_MESSAGES.values())
        elif "messageExpression" in rule:
            assert any(m.endswith(spec.MSG_ENV_RESERVED) for m in messages)
        else:
            assert rule["message"] in messages, f"no case in tests/bad_specs.py for {rule}"


def _refusal(extra_args: list[str]) -> str:
    with pytest.raises(ValueError) as exc:
        parse(valid_spec(training={"extraArgs": extra_args}))
    return str(exc.value)


def test_extra_args_may_not_give_an_option_the_operator_renders():
    rendered = set()
    for change in ({"dataset": {"synthetic": True}, "gpusPerNode": 0},
                   {"training": {"preset": "amp-8cards", "precision": "bf16", "epochs": 1,
                                 "batchSize": 32, "lr": 0.1, "workers": 4, "printFreq": 10,
                                 "channelsLast": True}},
                   {"training": {"channelsLast": False},
                    "checkpoint": {"hostPath": {"path": "/c"}, "intervalMinutes": 30}}):
        args = render.trainer_args(parse(valid_spec(**change)), OperatorSettings())
        rendered |= {a for a in args if a.startswith("-")}
    assert rendered == set(OPERATOR_FLAGS)  # each branch of render.trainer_args above
    for flag in sorted(rendered):
        assert spec.OPERATOR_OPTION_MESSAGES[flag] in _refusal([flag, "1"]), flag


def test_an_option_is_named_by_its_own_message_not_by_a_longer_one():
    # The rule names the first option the argument is a prefix of.
    for flag in spec.OPERATOR_OPTIONS:
        assert [f for f in spec.OPERATOR_OPTIONS if f.startswith(flag)] == [flag]


def test_extra_args_refuse_every_spelling_of_an_operator_option_and_no_other_option():
    for action in build_parser()._actions:
        owned = set(action.option_strings) & spec.OPERATOR_OPTIONS.keys()
        for option in action.option_strings:
            if owned:
                assert option in spec.OPERATOR_OPTIONS, f"{option} is also {sorted(owned)}"
                assert spec.OPERATOR_OPTION_MESSAGES[option] in _refusal([f"{option}=1"])
            else:  # e.g. --synthetic-train-size, --lr-steps: no prefix of an operator option
                parse(valid_spec(training={"extraArgs": [option]}))
