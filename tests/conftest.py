"""Shared fixtures: tiny datasets of real JPEG files in both layouts of --data-path; and,
for the tiers with a control plane (integration/, e2e/), an API client and the operator.
Each of those tiers gives its own `cluster` and `namespace`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jpeg_datasets import make_folder_dataset
from kube import Operator
from kubernetes import client

from devcluster.controlplane import ControlPlane, free_port


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("imagenet-folder"))


@pytest.fixture(scope="session")
def odd_val_dataset(tmp_path_factory) -> Path:
    """7 validation images: not divisible by 2 ranks."""
    root = make_folder_dataset(tmp_path_factory.mktemp("imagenet-odd"), classes=1,
                               train_per_class=8, val_per_class=7)
    return root


@pytest.fixture
def api(cluster: ControlPlane) -> client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def operator(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    """The operator as a subprocess, watching only the test's namespace (that keeps tests
    apart; its Deployment's default is cluster-wide), with its own rendezvous port, so
    that a job of one test never meets a straggler of another."""
    op = Operator(cluster, tmp_path / "operator.log", namespace=namespace,
                  settings={"RENDEZVOUS_PORT": str(free_port())}).start()
    yield op
    op.stop()
