"""What a real kube-apiserver answers at `kubectl apply`: the CRD's CEL rules, each bad spec
of tests/bad_specs.py refused with the message the operator's model gives too."""

from __future__ import annotations

import json

import pytest
from bad_specs import BAD_SPECS, GOOD_CHANGES, valid_spec
from kube import create_training
from kubernetes.client.rest import ApiException

from resnet50_operator import spec as s

pytestmark = pytest.mark.cluster


def training(spec: dict, name: str = "r50") -> dict:
    return {"apiVersion": f"{s.GROUP}/{s.VERSION}", "kind": s.KIND,
            "metadata": {"name": name}, "spec": spec}


def refusal(api, namespace: str, body: dict) -> str:
    with pytest.raises(ApiException) as exc:
        create_training(api, namespace, body)
    assert exc.value.status == 422, exc.value.body
    return json.loads(exc.value.body)["message"]


@pytest.mark.parametrize("case", BAD_SPECS, ids=lambda c: c.id)
def test_the_apiserver_refuses_with_the_rules_message(api, namespace, case):
    message = refusal(api, namespace, training(valid_spec(**case.change)))
    assert f"{case.field}: Invalid value" in message
    assert case.message in message


def test_the_valid_spec_of_the_cases_is_accepted(api, namespace):
    create_training(api, namespace, training(valid_spec()))


@pytest.mark.parametrize("change", GOOD_CHANGES, ids=str)
def test_the_apiserver_accepts_what_the_model_accepts(api, namespace, change):
    create_training(api, namespace, training(valid_spec(**change)))


def test_a_name_too_long_for_the_pods_is_refused_at_apply(api, namespace):
    message = refusal(api, namespace, training(valid_spec(), name="x" * 57))
    assert f"metadata.name: {s.NAME_LENGTH_LIMIT}" in message
    create_training(api, namespace, training(valid_spec(), name="x" * 56))
