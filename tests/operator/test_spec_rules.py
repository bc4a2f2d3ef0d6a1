"""The model refuses each bad spec of tests/bad_specs.py with the CRD rule's own message."""

from __future__ import annotations

import pytest
from bad_specs import BAD_SPECS, model_field, valid_spec

from resnet50_operator import crd, spec
from resnet50_operator.render import parse_training


def parse(spec: dict) -> None:
    parse_training({"metadata": {"name": "r50", "namespace": "ml"}, "spec": spec})


@pytest.mark.parametrize("case", BAD_SPECS, ids=lambda c: c.id)
def test_the_model_refuses_what_the_crd_rules_refuse(case):
    with pytest.raises(ValueError) as exc:
        parse(valid_spec(**case.change))
    assert f"{model_field(case.field)}: {case.message}" in str(exc.value)


def test_the_valid_spec_of_the_cases_is_valid():
    parse(valid_spec())


def _rules(node):
    yield from node.get("x-kubernetes-validations", [])
    for child in node.get("properties", {}).values():
        yield from _rules(child)
    if "items" in node:
        yield from _rules(node["items"])


def test_every_rule_of_the_spec_has_a_case():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    covered = {c.message for c in BAD_SPECS}
    for rule in _rules(schema["properties"]["spec"]):
        if "messageExpression" in rule:  # the reserved variables: the message names one
            assert any(c.message.endswith(spec.MSG_ENV_RESERVED) for c in BAD_SPECS)
        else:
            assert rule["message"] in covered, f"no case in tests/bad_specs.py for {rule}"
