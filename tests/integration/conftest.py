"""Fixtures of the control-plane tier: one real control plane per session (with the CRD
and three fake GPU nodes), a namespace per test, the operator as a subprocess."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from controlplane import ControlPlane, binaries_available
from kube import Kubelet, Operator
from kubernetes import client

from resnet50_operator import crd


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    reason = binaries_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI builds them first: their absence there is a bug
        pytest.skip(reason)
    # The CRD goes in before the controller-manager starts, so that its garbage collector
    # knows the resource from the beginning (it rediscovers resources only every 30 s).
    with ControlPlane(node_monitor_grace_period="1h", crds=[crd.build_crd()]) as cp:
        for i in range(3):
            cp.add_node(f"gpu-node-{i}", gpus=8)
        yield cp


@pytest.fixture
def api(cluster: ControlPlane) -> client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    yield name
    core = client.CoreV1Api(cluster.api_client())
    # Without kubelets, deleted pods would stay Terminating and keep their GPUs.
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


@pytest.fixture
def operator(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    # Watching only the test's namespace keeps tests apart (the operator also runs
    # cluster-wide: that is its default, in its Deployment).
    op = Operator(cluster, tmp_path / "operator.log", namespace=namespace).start()
    yield op
    op.stop()


@pytest.fixture
def kubelet(api: client.ApiClient, namespace: str) -> Kubelet:
    return Kubelet(api, namespace)
