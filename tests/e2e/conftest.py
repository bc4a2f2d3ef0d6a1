"""Fixtures of the end-to-end tier: the real control plane with the CRD, two simulated nodes
whose pods run as real trainer processes (devcluster/nodesim.py); `api` and `operator`:
tests/conftest.py.

Simulated, because what this tier exercises needs what one machine without GPUs cannot
give a real kubelet: several nodes and 8 GPUs each (the multi-node examples, placement,
a lost node). What depends on real containers (images, users and permissions, mounts,
DNS, grace periods, OOM kills, the operator's RBAC) is the node tier's, in tests/node/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kube import session_control_plane
from kubernetes import client

from devcluster.controlplane import ControlPlane
from devcluster.nodesim import NodeSimulator

NODES = 2
GPUS_PER_NODE = 8


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    with session_control_plane() as cp:
        yield cp


@pytest.fixture(scope="session")
def nodes(cluster: ControlPlane, tmp_path_factory) -> Iterator[NodeSimulator]:
    with NodeSimulator(cluster.api_client(), tmp_path_factory.mktemp("nodes"), nodes=NODES,
                       gpus=GPUS_PER_NODE) as sim:
        yield sim


@pytest.fixture
def namespace(cluster: ControlPlane, nodes: NodeSimulator) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    yield name
    core = client.CoreV1Api(cluster.api_client())
    core.delete_collection_namespaced_pod(name)  # the simulator stops the processes
    core.delete_namespace(name)
