"""Trainings on a real kubelet with real containers (containerd + runc), cluster DNS and the
operator in the cluster with only its RBAC (see conftest.py). What the simulated nodes of
e2e/ cannot show: images, users and permissions, mounts, DNS, grace periods, OOM kills."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import kube
import pytest
import yaml
from kube import EXAMPLES, table, training_status, wait_for
from kubernetes import client

pytestmark = pytest.mark.node

SMOKE = EXAMPLES / "resnet50-cpu-smoke.yaml"
SMOKE_NAME = "resnet50-cpu-smoke"
CHECKPOINT_ROOT = Path("/tmp/resnet50-checkpoints")  # the example's hostPath
TRAINER_IMAGE = "resnet50-operator/trainer:0.1.0"


def smoke(name: str, **spec) -> str:
    """The CPU smoke example as YAML, renamed, with spec fields replaced."""
    body = yaml.safe_load(SMOKE.read_text())
    body["metadata"]["name"] = name
    body["spec"].update(spec)
    return yaml.safe_dump(body)


def phase(api, namespace, name) -> str:
    return training_status(api, namespace, name).get("phase", "")


def wait_phase(api, namespace, name, want, timeout=600):
    return kube.wait_phase(api, namespace, name, want, timeout, interval=1)


def pods(api, namespace, name):
    return client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"resnet50.dev/training={name}").items


def fresh_checkpoints(name: str) -> Path:
    """The example's checkpoint directory of `name`, absent, as on a fresh node."""
    d = CHECKPOINT_ROOT / name
    shutil.rmtree(d, ignore_errors=True)
    return d


def test_the_cpu_smoke_example_as_shipped_succeeds(real_node, namespace):
    api = real_node.api()
    ckpt = fresh_checkpoints(SMOKE_NAME)
    real_node.kubectl("apply", "-n", namespace, "-f", str(SMOKE))
    # Progress read from the rank-0 pod's real IP while it trains (epoch 1 of 2 leaves
    # some 20 s before the end, in which pod 1 is still there to look up pod 0's name).
    running = wait_for("progress while running", lambda: [
        row for row in table(real_node.kubectl("get", "r50t", "-n", namespace).stdout)
        if row["PHASE"] == "Running" and row["EPOCH"]], timeout=600, interval=1)
    assert running[0]["READY"] == "2/2"
    # MASTER_ADDR resolves through CoreDNS and the headless Service to pod 0's IP.
    pod0 = client.CoreV1Api(api).read_namespaced_pod(f"{SMOKE_NAME}-0", namespace)
    master = f"{SMOKE_NAME}-0.{SMOKE_NAME}.{namespace}.svc"
    resolved = real_node.kubectl("exec", "-n", namespace, f"{SMOKE_NAME}-1", "--",
                                 "getent", "hosts", master).stdout.split()
    assert resolved[0] == pod0.status.pod_ip
    done = wait_phase(api, namespace, SMOKE_NAME, "Succeeded")
    assert done["restarts"] == 0
    (row,) = table(real_node.kubectl("get", "r50t", "-n", namespace).stdout)
    assert row["EPOCH"] == "2/2" and row["TOP-1"] and row["IMG/S"]
    # The kubelet made the hostPath as root; the init container gave the run's directory to
    # the trainer's uid, and the trainer wrote its checkpoints there.
    assert CHECKPOINT_ROOT.stat().st_uid == 0
    assert ckpt.stat().st_uid == 1000
    assert sorted(p.name for p in ckpt.glob("checkpoint_epoch*.pt")) == [
        "checkpoint_epoch0001.pt", "checkpoint_epoch0002.pt"]


def apply(real_node, namespace, name, drop=(), **spec):
    body = yaml.safe_load(smoke(name, **spec))
    for key in drop:
        body["spec"].pop(key)
    real_node.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))


def condition(status, type_):
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_deleting_a_pod_mid_epoch_restarts_the_group_from_its_checkpoint(real_node, namespace):
    api, name, epochs = real_node.api(), "r50-delete-pod", 6
    ckpt = fresh_checkpoints(name)
    apply(real_node, namespace, name, training={"preset": "cpu-smoke", "epochs": epochs})
    # The first checkpoint is written: the group trains epoch 2 (of 6, some 40 s to go).
    wait_for("the first checkpoint", lambda: (ckpt / "checkpoint_epoch0001.pt").exists(),
             timeout=600, interval=0.2)
    # A real pod deletion: SIGTERM to the trainer, its grace period, then the kubelet's kill.
    real_node.kubectl("delete", "pod", "-n", namespace, f"{name}-1", "--wait=false")
    status = wait_phase(api, namespace, name, "Succeeded", timeout=900)
    assert status["restarts"] == 1 and status["restartHistory"][0]["reason"] == "PodDeleted"
    assert status["training"]["epoch"] == f"{epochs}/{epochs}"
    # As many epochs as an uninterrupted run, each trained once: the second attempt resumed
    # from the first one's last checkpoint.
    assert sorted(p.name for p in ckpt.glob("checkpoint_epoch*.pt"))[-1] == \
        f"checkpoint_epoch{epochs:04d}.pt"
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(1, epochs + 1))
    starts = [r for r in records if r["kind"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"].startswith(f"/checkpoints/{name}/")


def test_a_trainer_killed_for_memory_is_oomkilled_and_retried(real_node, namespace):
    api, name = real_node.api(), "r50-oom"
    apply(real_node, namespace, name, drop=("checkpoint",),
          resources={"cpu": "500m", "memory": "160Mi"},
          restartPolicy={"maxRestarts": 1, "backoffSeconds": 1})
    status = wait_phase(api, namespace, name, "Failed", timeout=300)
    assert condition(status, "Failed")["reason"] == "RestartLimitExceeded"
    assert status["restartHistory"][0]["reason"] == "OOMKilled"  # retried once
    assert (status["lastFailure"]["reason"], status["lastFailure"]["exitCode"]) == (
        "OOMKilled", 137)
    warnings = [(e.reason, e.message) for e in client.CoreV1Api(api).list_namespaced_event(
        namespace).items if e.involved_object.name == name and e.type == "Warning"]
    assert any(reason == "Restarting" and "exit code 137 (OOMKilled)" in message
               for reason, message in warnings), warnings


def test_a_missing_image_is_the_pending_reason_until_it_is_loaded(real_node, namespace):
    api, name = real_node.api(), "r50-image"
    image = f"resnet50-operator/trainer:not-built-{namespace}"
    apply(real_node, namespace, name, drop=("checkpoint",), image=image,
          imagePullPolicy="Never")
    waiting = wait_for("ErrImageNeverPull", lambda: (c := condition(
        training_status(api, namespace, name), "Running")).get("reason") == "ErrImageNeverPull"
        and c, timeout=120, interval=1)
    assert image in waiting["message"]
    real_node.ctr("images", "tag", f"docker.io/{TRAINER_IMAGE}", f"docker.io/{image}")
    try:
        wait_for("the pods to run", lambda: phase(api, namespace, name) in (
            "Running", "Succeeded"), timeout=300, interval=1)
    finally:
        real_node.ctr("images", "rm", f"docker.io/{image}")


def test_a_missing_claim_is_the_pending_reason_and_an_unwritable_volume_names_the_fix(
        real_node, namespace, tmp_path):
    api, name = real_node.api(), "r50-claim"
    apply(real_node, namespace, name, checkpoint={"persistentVolumeClaim": {"claimName": name}})
    waiting = wait_for("the claim's absence as the reason", lambda: (c := condition(
        training_status(api, namespace, name), "Running")).get("reason") == "Unschedulable"
        and c, timeout=120, interval=1)
    assert f'persistentvolumeclaim "{name}" not found' in waiting["message"]
    # An admin's volume as they often come: a host directory of root's, mode 0755. A
    # hostPath PersistentVolume gets no fsGroup, so the trainer (uid 1000) cannot write it.
    volume_dir = tmp_path / "volume"
    volume_dir.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": namespace},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                   "hostPath": {"path": str(volume_dir)}, "storageClassName": "",
                   "claimRef": {"namespace": namespace, "name": name}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                    "volumeName": namespace, "resources": {"requests": {"storage": "1Gi"}}}}
    real_node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([pv, pvc]))
    try:
        failed = wait_phase(api, namespace, name, "Failed", timeout=300)
    finally:
        real_node.kubectl("delete", "r50t", "-n", namespace, name, "--wait=true", check=False)
        real_node.kubectl("delete", "pvc", "-n", namespace, name, check=False)
        real_node.kubectl("delete", "pv", namespace, check=False)
    reason = condition(failed, "Failed")
    assert reason["reason"] == "AccessDenied"
    assert f"/checkpoints/{name} is not writable by uid 1000" in reason["message"]
    assert "/checkpoints is owned by uid 0 gid 0, mode 0755" in reason["message"]
    assert "chown -R 1000:1000" in reason["message"]
    assert failed["restarts"] == 0  # the same volume would fail again


def test_deleting_a_training_leaves_no_container_service_or_pod(real_node, namespace):
    api, name = real_node.api(), "r50-gone"
    apply(real_node, namespace, name, drop=("checkpoint",))
    wait_for("both pods running", lambda: phase(api, namespace, name) == "Running",
             timeout=300, interval=1)
    ours = f'labels."io.kubernetes.pod.namespace"=={namespace}'
    assert real_node.ctr("containers", "ls", "-q", ours).split()
    core = client.CoreV1Api(api)
    grace = core.read_namespaced_pod(f"{name}-0", namespace).spec.termination_grace_period_seconds
    real_node.kubectl("delete", "r50t", "-n", namespace, name)
    # A trainer that acts on SIGTERM stops within seconds; one that cannot yet (blocked in
    # its rendezvous while the other pod is going too) is killed when the grace period ends.
    wait_for("no pods, Service or containers", lambda: not pods(api, namespace, name)
             and not core.list_namespaced_service(namespace).items
             and not real_node.ctr("containers", "ls", "-q", ours).split(),
             timeout=grace + 60, interval=1)


def test_the_operator_needed_no_more_than_its_rbac(real_node):
    """Last in this file: the in-cluster operator ran every training above with only the
    permissions of manifests/operator/rbac.yaml."""
    log = real_node.kubectl("logs", "-n", "resnet50-operator", "--tail=-1", "--prefix", "-l",
                            "app.kubernetes.io/name=resnet50-operator").stdout  # both replicas
    account = "system:serviceaccount:resnet50-operator:resnet50-operator"
    denied = re.findall(rf'forbidden: User \\?"{account}\\?" cannot [^"\\]*', log)
    assert not denied, denied
    assert "failed with an exception" not in log, log[-3000:]  # and nothing else went wrong
    assert "r50-gone" in log  # it is the operator that served this session's trainings
