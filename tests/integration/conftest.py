"""Fixtures of the control-plane tier: one real control plane per session (with the CRD
and three fake GPU nodes), a namespace per test, a fake kubelet (`api` and `operator`:
tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kube import Kubelet, session_control_plane
from kubernetes import client

from devcluster.controlplane import ControlPlane


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    with session_control_plane() as cp:
        for i in range(3):
            cp.add_node(f"gpu-node-{i}", gpus=8)
        yield cp


@pytest.fixture
def namespace(request: pytest.FixtureRequest, cluster: ControlPlane) -> Iterator[str]:
    """A fresh namespace; parametrize it indirectly with a dict to give it labels."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name, labels=getattr(request, "param", None))
    yield name
    core = client.CoreV1Api(cluster.api_client())
    # Without kubelets, deleted pods would stay Terminating and keep their GPUs.
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


@pytest.fixture
def kubelet(api: client.ApiClient, namespace: str) -> Kubelet:
    return Kubelet(api, namespace)
