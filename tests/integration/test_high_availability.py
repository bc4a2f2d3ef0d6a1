"""Two operator replicas against a real kube-apiserver: only the holder of the Lease acts; a
standby takes over when the leader is killed (SIGKILL) under load, or at once when the
leader stops (SIGTERM) and releases the Lease."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kube import Operator, create_training, get_training, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster.controlplane import ControlPlane, free_port
from resnet50_operator.leader import LEASE_DURATION, LEASE_NAME, RETRY_INTERVAL
from resnet50_operator.render import ATTEMPT_LABEL, TRAINING_LABEL
from resnet50_operator.spec import GROUP, VERSION

pytestmark = pytest.mark.cluster

CREATED = ": created Pod "


def training(name: str) -> dict:
    """Two pods of one GPU each: many fit on the three fake nodes."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResNet50Training",
            "metadata": {"name": name},
            "spec": {"nodes": 2, "gpusPerNode": 1, "dataset": {"hostPath": {"path": "/data"}},
                     "restartPolicy": {"maxRestarts": 3, "backoffSeconds": 0}}}


def two_operators(cluster: ControlPlane, namespace: str, tmp_path: Path) -> list[Operator]:
    port = str(free_port())
    return [Operator(cluster, tmp_path / f"operator-{i}.log", namespace=namespace,
                     settings={"RENDEZVOUS_PORT": port}).start() for i in (0, 1)]


def holder(api: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity


def leader_and_standby(api, namespace, operators) -> tuple[Operator, Operator, str]:
    """Once one leads and the other says it waits for it."""
    leading = wait_for("a leader", lambda: holder(api, namespace), timeout=30)
    pids = {op.proc.pid: op for op in operators}
    leader = pids[int(leading.rsplit("_", 1)[1])]
    (standby,) = (op for op in operators if op is not leader)
    wait_for("the standby waiting", lambda: f"waiting for the lease held by {leading}"
             in standby.log_text(), timeout=30)
    return leader, standby, leading


def pods(api, namespace, name=None) -> list[client.V1Pod]:
    selector = f"{TRAINING_LABEL}={name}" if name else None
    return [p for p in client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=selector).items if not p.metadata.deletion_timestamp]


def status(api, namespace, name) -> dict:
    return get_training(api, namespace, name).get("status") or {}


def attempt(kubelet, api, namespace, name) -> int | None:
    """The attempt of the training's two pods, once they are of one attempt (the fake
    kubelet finalises the deleted pods of the attempt before, whose names they take)."""
    kubelet.finalize_deleted()
    found = {p.metadata.labels[ATTEMPT_LABEL] for p in pods(api, namespace, name)}
    return int(found.pop()) if len(found) == 1 and len(pods(api, namespace, name)) == 2 \
        else None


def test_one_replica_acts_and_the_other_takes_over_when_it_is_killed(api, cluster, namespace,
                                                                      kubelet, tmp_path):
    operators = two_operators(cluster, namespace, tmp_path)
    try:
        leader, standby, leading = leader_and_standby(api, namespace, operators)
        # Load: trainings created, run, one restarted, and more arriving when the leader dies.
        names = [f"r50-{i}" for i in range(4)]
        for name in names:
            create_training(api, namespace, training(name))
        wait_for("every training's pods", lambda: len(pods(api, namespace)) == 2 * len(names))
        for pod in pods(api, namespace):
            kubelet.run(pod.metadata.name)
        wait_for("all Running", lambda: all(status(api, namespace, n).get("phase") == "Running"
                                            for n in names))
        kubelet.exit("r50-0-1", 137, "OOMKilled")
        wait_for("r50-0's attempt 1", lambda: attempt(kubelet, api, namespace, "r50-0") == 1)
        wait_for("the leader's log", lambda: leader.log_text().count(CREATED)
                 == 2 * len(names) + 2)
        assert CREATED not in standby.log_text()
        assert "acquired the lease" not in standby.log_text()

        late = [f"late-{i}" for i in range(3)]
        for name in late[:2]:
            create_training(api, namespace, training(name))
        before = {p.metadata.uid for p in pods(api, namespace)
                  if p.metadata.labels[TRAINING_LABEL] in names}
        leader.kill()  # SIGKILL, in the middle of creating the first late trainings' pods
        create_training(api, namespace, training(late[2]))

        # The standby leads within the Lease's duration (+ a look, + slack for kopf's start).
        wait_for("the late trainings' pods", lambda: all(
            len(pods(api, namespace, n)) == 2 for n in late),
            timeout=LEASE_DURATION + RETRY_INTERVAL + 10)
        assert holder(api, namespace) not in (None, leading)
        assert "acquired the lease" in standby.log_text()
        wait_for("the late trainings Pending", lambda: all(
            status(api, namespace, n).get("phase") == "Pending" for n in late))

        # The new leader acts: a failure after the takeover restarts its training once.
        for pod in pods(api, namespace, "late-0"):
            kubelet.run(pod.metadata.name)
        wait_for("late-0 Running", lambda: status(api, namespace, "late-0").get("phase")
                 == "Running")
        kubelet.exit("late-0-0", 137, "OOMKilled")
        wait_for("late-0's attempt 1", lambda: attempt(kubelet, api, namespace, "late-0") == 1)

        # No duplicates, no double restarts: every training has its two pods of its one
        # attempt, the earlier ones were left alone, and the counts are what happened.
        for name in names + late:
            assert sorted(p.metadata.name for p in pods(api, namespace, name)) == \
                [f"{name}-0", f"{name}-1"], name
        restarts = {n: status(api, namespace, n)["restarts"] for n in names + late}
        assert restarts == {**dict.fromkeys(names + late, 0), "r50-0": 1, "late-0": 1}
        assert {p.metadata.uid for p in pods(api, namespace)
                if p.metadata.labels[TRAINING_LABEL] in names} == before
        assert "Traceback" not in standby.log_text()
    finally:
        for op in operators:
            op.stop()


def test_a_stopped_leader_releases_the_lease_and_the_standby_takes_over_at_once(
        api, cluster, namespace, kubelet, tmp_path):
    operators = two_operators(cluster, namespace, tmp_path)
    try:
        leader, standby, leading = leader_and_standby(api, namespace, operators)
        leader.stop()  # SIGTERM
        assert leader.proc.returncode == 0
        assert "released the lease" in leader.log_text()
        stopped = time.monotonic()
        wait_for("the standby leading", lambda: holder(api, namespace) not in (None, leading),
                 timeout=LEASE_DURATION)
        # Well before the Lease would have expired: it was released, not left to expire.
        assert time.monotonic() - stopped < LEASE_DURATION / 2
        create_training(api, namespace, training("after"))
        wait_for("its pods", lambda: len(pods(api, namespace, "after")) == 2)
        # By the standby: its log says so once the lines are written (the pods can be
        # listed a moment before the second line reaches the file).
        wait_for("the standby's log of both", lambda: standby.log_text().count(CREATED) == 2)
    finally:
        for op in operators:
            op.stop()
