"""Fixtures of the end-to-end tier: the real control plane with the CRD, two simulated nodes
whose pods run as real trainer processes (nodesim.py), and the operator as a subprocess.

Simulated, because what this tier exercises needs what one machine without GPUs cannot
give a real kubelet: several nodes and 8 GPUs each (the multi-node examples, placement,
a lost node). What depends on real containers (images, users and permissions, mounts,
DNS, grace periods, OOM kills, the operator's RBAC) is the node tier's, in tests/node/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import Operator, session_control_plane
from kubernetes import client

from devcluster.controlplane import ControlPlane, free_port
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
def api(cluster: ControlPlane) -> client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def namespace(cluster: ControlPlane, nodes: NodeSimulator) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(name)
    yield name
    core = client.CoreV1Api(cluster.api_client())
    core.delete_collection_namespaced_pod(name)  # the simulator stops the processes
    core.delete_namespace(name)


@pytest.fixture
def operator(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    # Its own rendezvous port, so a job of one test never meets a straggler of another.
    op = Operator(cluster, tmp_path / "operator.log", namespace=namespace,
                  settings={"RENDEZVOUS_PORT": str(free_port())}).start()
    yield op
    op.stop()
