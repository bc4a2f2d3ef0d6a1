"""Helpers of the tiers that run the operator as a subprocess against the real control plane
(etcd, kube-apiserver, controller-manager, scheduler): integration/ and e2e/.

There is no kubelet here. In integration/, `Kubelet` below writes pod status through the
API the way a kubelet does (Running, then Succeeded/Failed with an exit code) and
finalises deleted pods: the one fake of that tier, standing in for the node agent that
cannot run on these machines. e2e/ runs the pods for real with nodesim.NodeSimulator.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client.rest import ApiException

from devcluster.controlplane import ControlPlane, binaries_available
from devcluster.nodesim import kubelet_status
from resnet50_operator import crd
from resnet50_operator.spec import GROUP, PLURAL, VERSION

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "manifests" / "examples"


@contextlib.contextmanager
def session_control_plane() -> Iterator[ControlPlane]:
    """A control plane with the CRD, for a tier's session; skipped without the binaries."""
    reason = binaries_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI builds them first: their absence there is a bug
        pytest.skip(reason)
    # The CRD goes in before the controller-manager starts, so that its garbage collector
    # knows the resource from the beginning (it rediscovers resources only every 30 s).
    with ControlPlane(node_monitor_grace_period="1h", crds=[crd.build_crd()]) as cp:
        yield cp


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60,
             interval: float = 0.2) -> Any:
    """Poll until check() returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class Operator:
    """`python -m resnet50_operator` as its own process, as it runs in its Deployment."""

    def __init__(self, cluster: ControlPlane, log: Path, kubeconfig: Path | None = None,
                 namespace: str | None = None, settings: dict[str, str] | None = None) -> None:
        """settings: RESNET50_OPERATOR_* variables (without the prefix), e.g. RENDEZVOUS_PORT;
        they replace the defaults below."""
        self.env = {**os.environ, **cluster.env(),
                    "RESNET50_OPERATOR_RECONCILE_INTERVAL_SECONDS": "0.5",
                    # The tests' datasets and checkpoints are hostPaths in temporary
                    # directories: allow any. The policy has its own tests
                    # (tests/operator/test_policy.py); a test of it here sets its own.
                    "RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES": "/",
                    **{f"RESNET50_OPERATOR_{k}": v for k, v in (settings or {}).items()}}
        if kubeconfig:
            self.env["KUBECONFIG"] = str(kubeconfig)
        self.args = ["--liveness", ""] + (["--namespace", namespace] if namespace else [])
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Operator:
        out = open(self.log, "a")  # noqa: SIM115 (kept open for the process's life)
        self.proc = subprocess.Popen([sys.executable, "-m", "resnet50_operator", *self.args],
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Kubelet:
    """Writes pod status through the API as a kubelet would (see the module docstring)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def _status(self, name: str, phase: str, state: dict[str, Any], ready: bool,
                reason: str | None = None) -> None:
        status = kubelet_status(phase, state, ready, **({"reason": reason} if reason else {}))
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def run(self, name: str) -> None:
        self._status(name, "Running", {"running": {"startedAt": "2026-11-22T00:00:00Z"}}, True)

    def exit(self, name: str, code: int, reason: str = "", message: str = "") -> None:
        state = {"terminated": {"exitCode": code, "reason": reason or (
            "Completed" if code == 0 else "Error"), "message": message}}
        self._status(name, "Succeeded" if code == 0 else "Failed", state, False)

    def evict(self, name: str) -> None:
        self._status(name, "Failed", {"terminated": {"exitCode": 137, "reason": "Error"}},
                     False, reason="Evicted")

    def pods(self, **labels: str) -> list[client.V1Pod]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items()) or None
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def finalize_deleted(self) -> int:
        """Complete the deletion of pods that are Terminating; returns how many are left."""
        left = 0
        for pod in self.pods():
            if pod.metadata.deletion_timestamp:
                try:
                    self.core.delete_namespaced_pod(pod.metadata.name, self.namespace,
                                                    grace_period_seconds=0)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            else:
                left += 1
        return left


def table(text: str) -> list[dict[str, str]]:
    """The rows of `kubectl get` output by column (cells may be empty: split by position)."""
    header, *rows = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [{name: row[start:end].strip() for name, start, end in
             zip(names, starts, [*starts[1:], None], strict=True)} for row in rows]


def create_training(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body)


def get_training(api: client.ApiClient, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name)


def training_status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return get_training(api, namespace, name).get("status") or {}


def wait_phase(api: client.ApiClient, namespace: str, name: str, phase: str,
               timeout: float = 60, interval: float = 0.2) -> dict[str, Any]:
    """The training's status once its phase is `phase`; fails at once on an unexpected
    Failed, showing the status that says why."""
    def reached() -> dict[str, Any] | None:
        status = training_status(api, namespace, name)
        assert status.get("phase") != "Failed" or phase == "Failed", status
        return status if status.get("phase") == phase else None

    return wait_for(f"{name} {phase}", reached, timeout, interval)


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def apply_yaml(api: client.ApiClient, path: Path, namespace: str | None = None) -> None:
    utils.create_from_yaml(api, str(path), namespace=namespace)


def events(api: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    """The Events of the training `name` (its Service, of the same name, has its own)."""
    return [e for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
            if e.involved_object.name == name and e.involved_object.kind == "ResNet50Training"]


def wait_for_events(api: client.ApiClient, namespace: str, name: str, *reasons: str,
                    timeout: float = 60) -> list[client.CoreV1Event]:
    """The training's Events once one of each reason is there, in the order of `reasons`.
    The operator posts Events after it writes the status that they explain, so a test that
    has just seen that status must wait for them."""
    def found() -> list[client.CoreV1Event] | None:
        seen = events(api, namespace, name)
        first = [next((e for e in seen if e.reason == r), None) for r in reasons]
        return None if None in first else first

    return wait_for(f"Events {', '.join(reasons)} of {name}", found, timeout)
