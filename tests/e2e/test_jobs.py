"""Whole trainings through the operator: a real control plane, the operator as a process, and
pods that run the real trainer as local processes (nodesim.py, which points the rendezvous
address at 127.0.0.1: the one liberty of this tier)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import kube
import pytest
from kube import (
    Operator,
    create_training,
    events,
    training_status,
    wait_for,
    wait_for_events,
)
from kubernetes import client
from kubernetes.client.rest import ApiException

from resnet50_operator.spec import GROUP, PLURAL, VERSION
from resnet50_trainer.checkpoint import epoch_checkpoints

pytestmark = pytest.mark.e2e
RESULT_LINE = re.compile(r"Acc@1=\d+\.\d\d,FPS=\d+,Time=\w+,BatchSize=\d+$", re.M)
RESUMED = re.compile(r"Resumed from \S+ \(epoch (\d+) done")
JOB_TIMEOUT = 300  # seconds; a job below trains for well under a minute on 2 cores


def cpu_training(name: str, checkpoints: Path, **spec: object) -> dict:
    """2 pods x 1 process with gloo, the cpu-smoke preset (32 px synthetic images)."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResNet50Training",
        "metadata": {"name": name},
        "spec": {
            "nodes": 2, "gpusPerNode": 0, "processesPerNode": 1,
            "resources": {"cpu": "1", "memory": "2Gi"},
            "dataset": {"synthetic": True},
            "checkpoint": {"hostPath": {"path": str(checkpoints)}},
            "training": {"preset": "cpu-smoke"},
            "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 1},
            # Two trainers share 2 cores: one thread each keeps them from thrashing.
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        },
    }
    body["spec"].update(spec)
    return body


def wait_phase(api, namespace, name, phase, timeout=JOB_TIMEOUT) -> dict:
    return kube.wait_phase(api, namespace, name, phase, timeout)


def holds(what: str, check, seconds: float) -> None:
    """Assert that check() stays true for `seconds` (the operator reconciles every 0.5 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"no longer {what}"
        time.sleep(0.2)


def event_reasons(api, namespace, name) -> list[str]:
    return [e.reason for e in events(api, namespace, name)]


def pods(api, namespace) -> list[client.V1Pod]:
    return client.CoreV1Api(api).list_namespaced_pod(namespace).items


def test_a_two_node_job_on_real_jpegs_runs_and_succeeds(api, namespace, operator, nodes,
                                                        folder_dataset, tmp_path):
    body = cpu_training("smoke", tmp_path / "ckpt", dataset={
        "hostPath": {"path": str(folder_dataset)}})
    body["spec"]["training"] = {"epochs": 2, "batchSize": 4, "workers": 0, "printFreq": 1,
                                "extraArgs": ["--train-crop-size", "32", "--val-resize-size",
                                              "36", "--val-crop-size", "32"]}
    create_training(api, namespace, body)

    running = wait_phase(api, namespace, "smoke", "Running")
    assert running["nodes"] == {"ready": 2, "total": 2}
    done = wait_phase(api, namespace, "smoke", "Succeeded")

    assert done["restarts"] == 0 and done["completionTime"]
    master_log = nodes.log_text(namespace, "smoke-0")
    assert RESULT_LINE.search(master_log), master_log[-2000:]
    assert "2 processes x 4 images" in master_log
    out = tmp_path / "ckpt" / "smoke"
    assert sorted(p.name for p in epoch_checkpoints(out)) == ["checkpoint_epoch0001.pt",
                                                             "checkpoint_epoch0002.pt"]
    assert (out / "best.pt").is_file()
    wait_for_events(api, namespace, "smoke", "Created", "Running", "Succeeded")


def test_a_killed_worker_restarts_the_group_which_resumes_from_its_checkpoint(
        api, namespace, operator, nodes, tmp_path):
    create_training(api, namespace, cpu_training("kill", tmp_path / "ckpt",
                                                 training={"preset": "cpu-smoke", "epochs": 4}))
    out = tmp_path / "ckpt" / "kill"
    wait_for("the first epoch's checkpoint", lambda: epoch_checkpoints(out), timeout=JOB_TIMEOUT)
    nodes.kill(namespace, "kill-1", signal.SIGKILL)

    done = wait_phase(api, namespace, "kill", "Succeeded")

    assert done["restarts"] == 1 and done["attempt"] == 1
    (record,) = done["restartHistory"]
    assert record["attempt"] == 0 and "pod kill-1 exit code 137" in record["message"]
    (restarting,) = wait_for_events(api, namespace, "kill", "Restarting")
    assert [e.reason for e in events(api, namespace, "kill")].count("Restarting") == 1
    assert restarting.message.startswith("restart 1 of 2 in 1 s after pod kill-1 exit code 137 ")
    resumed = RESUMED.search(nodes.log_text(namespace, "kill-0"))  # the new attempt's log
    assert resumed and int(resumed.group(1)) >= 1, "the new attempt did not resume"
    assert len(epoch_checkpoints(out)) >= 1 and (out / "checkpoint_epoch0004.pt").is_file()


def test_an_evicted_pod_restarts_the_group_at_once_from_its_mid_epoch_checkpoint(
        api, namespace, operator, nodes, tmp_path):
    """A drain's eviction (the real Eviction API, which sets the DisruptionTarget condition):
    the trainer saves the step it reached on SIGTERM, the group restarts at once without
    spending maxRestarts, and the next attempt resumes mid-epoch."""
    body = cpu_training("evict", tmp_path / "ckpt",
                        training={"preset": "cpu-smoke", "batchSize": 2, "printFreq": 1})
    body["spec"]["restartPolicy"] = {"maxRestarts": 0}  # a counted restart would fail it
    create_training(api, namespace, body)
    wait_for("step 3 of epoch 1", lambda: "Epoch [1/2] [ 3/32]" in nodes.log_text(
        namespace, "evict-0"), timeout=JOB_TIMEOUT)
    client.CoreV1Api(api).create_namespaced_pod_eviction("evict-1", namespace, {
        "metadata": {"name": "evict-1", "namespace": namespace}})

    done = wait_phase(api, namespace, "evict", "Succeeded")

    assert (done["restarts"], done["disruptions"], done["attempt"]) == (0, 1, 1)
    (record,) = done["restartHistory"]
    assert record["disruption"] and record["reason"] == "EvictionByEvictionAPI"
    (disrupted,) = wait_for_events(api, namespace, "evict", "Disrupted")
    assert disrupted.type == "Normal" and "Restarting" not in event_reasons(api, namespace,
                                                                           "evict")
    assert disrupted.message.startswith("disruption 1, not counted against maxRestarts "
                                        "(0 of 0 restarts used); restarting at once after "
                                        "pod evict-1 ")
    resumed = re.search(r"Resumed from \S+/checkpoint_mid_epoch\.pt \(epoch 0 done, step "
                        r"(\d+), \1 steps of epoch 1\)", nodes.log_text(namespace, "evict-0"))
    assert resumed and 3 <= int(resumed.group(1)) < 32, "the new attempt did not resume mid-epoch"


def test_a_missing_dataset_path_fails_at_once_naming_the_path(api, namespace, operator, nodes,
                                                               tmp_path):
    (tmp_path / "volume").mkdir()
    body = cpu_training("nodata", tmp_path / "ckpt", dataset={
        "hostPath": {"path": str(tmp_path / "volume")}, "subPath": "imagenet-missing"})
    body["spec"]["training"] = {"epochs": 1}
    create_training(api, namespace, body)

    done = wait_phase(api, namespace, "nodata", "Failed")

    failed = next(c for c in done["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ConfigurationError"
    assert "exit code 2" in failed["message"] and "imagenet-missing" in failed["message"]
    assert done["restarts"] == 0 and "Restarting" not in event_reasons(api, namespace, "nodata")


def test_more_gpus_than_any_node_has_stays_pending_with_the_schedulers_reason(
        api, namespace, operator, nodes, tmp_path):
    create_training(api, namespace, cpu_training("toobig", tmp_path / "ckpt", gpusPerNode=16))

    def unschedulable():
        st = training_status(api, namespace, "toobig")
        cond = next((c for c in st.get("conditions", []) if c["type"] == "Running"), {})
        return st if cond.get("reason") == "Unschedulable" else None
    st = wait_for("the Unschedulable condition", unschedulable)

    running = next(c for c in st["conditions"] if c["type"] == "Running")
    assert "Insufficient nvidia.com/gpu" in running["message"]
    assert st["phase"] == "Pending" and st["restarts"] == 0
    # And it stays so over several reconcile intervals: no crash, no restart loop.
    holds("Pending without restarts",
          lambda: training_status(api, namespace, "toobig")["phase"] == "Pending"
          and training_status(api, namespace, "toobig")["restarts"] == 0, seconds=5)
    assert "Traceback" not in operator.log_text()


def test_the_operator_killed_mid_job_comes_back_without_duplicates(api, namespace, operator,
                                                                    nodes, cluster, tmp_path):
    create_training(api, namespace, cpu_training("opkill", tmp_path / "ckpt",
                                                 training={"preset": "cpu-smoke", "epochs": 3}))
    wait_phase(api, namespace, "opkill", "Running")
    operator.kill()
    pods_while_down = {p.metadata.uid for p in pods(api, namespace)}
    second = Operator(cluster, tmp_path / "operator-2.log", namespace=namespace,
                      settings={"RENDEZVOUS_PORT": operator.env[
                          "RESNET50_OPERATOR_RENDEZVOUS_PORT"]}).start()
    try:  # the second takes over once the first one's Lease has expired (about 17 s)
        done = wait_phase(api, namespace, "opkill", "Succeeded", timeout=180)
    finally:
        second.stop()

    assert done["restarts"] == 0
    assert {p.metadata.uid for p in pods(api, namespace)} == pods_while_down
    assert len(pods_while_down) == 2
    assert RESULT_LINE.search(nodes.log_text(namespace, "opkill-0"))


def test_deleting_the_training_removes_its_pods_and_service(api, namespace, operator, nodes,
                                                            tmp_path):
    create_training(api, namespace, cpu_training("gone", tmp_path / "ckpt",
                                                 training={"preset": "cpu-smoke",
                                                           "epochs": 50}))
    wait_phase(api, namespace, "gone", "Running")
    workers = [nodes.container(namespace, f"gone-{i}") for i in range(2)]

    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                 PLURAL, "gone")

    wait_for("the pods to go", lambda: not pods(api, namespace), timeout=120)
    core = client.CoreV1Api(api)

    def service_gone():
        try:
            core.read_namespaced_service("gone", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False
    wait_for("the Service to go", service_gone)
    assert all(w.proc.poll() is not None for w in workers), "a trainer process outlived its pod"


def test_repeated_kills_spend_the_restart_budget_and_fail(api, namespace, operator, nodes,
                                                          tmp_path):
    body = cpu_training("budget", tmp_path / "ckpt", training={"preset": "cpu-smoke",
                                                               "epochs": 50})
    body["spec"]["restartPolicy"] = {"maxRestarts": 1, "backoffSeconds": 0}
    create_training(api, namespace, body)

    for attempt in (0, 1):
        def started(attempt=attempt):
            st = training_status(api, namespace, "budget")
            c = nodes.container(namespace, "budget-1")
            return c if st.get("attempt") == attempt and st.get("phase") == "Running" and \
                c and c.proc.poll() is None else None
        wait_for(f"attempt {attempt} running", started, timeout=JOB_TIMEOUT)
        nodes.kill(namespace, "budget-1", signal.SIGKILL, oom=attempt == 1)

    done = wait_phase(api, namespace, "budget", "Failed")

    failed = next(c for c in done["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "RestartLimitExceeded"
    assert "restart budget of 1 spent" in failed["message"]
    assert "pod budget-1 exit code 137 (OOMKilled)" in failed["message"]
    assert done["restarts"] == 1
