"""Faults of the platform under a running training, against the real control plane: the
apiserver stops answering for 30 s. (The operator killed under load:
test_high_availability.py and test_operator.py; a poison training and a hostile metrics
endpoint next to a healthy one: test_isolation.py.)"""

from __future__ import annotations

import os
import signal
import time

import pytest
from kube import create_training, training_status, wait_for, wait_phase

from resnet50_operator.spec import GROUP, VERSION

pytestmark = pytest.mark.cluster

OUTAGE_SECONDS = 30


def training(name: str, **spec: object) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResNet50Training",
            "metadata": {"name": name},
            "spec": {"nodes": 2, "gpusPerNode": 8, "dataset": {"hostPath": {"path": "/data"}},
                     "restartPolicy": {"maxRestarts": 3, "backoffSeconds": 0}, **spec}}


def test_an_apiserver_that_stops_answering_loses_nothing(api, namespace, cluster, operator,
                                                        kubelet):
    """SIGSTOP: connections hang rather than fail, the hardest outage for a client. The
    operator cannot renew its Lease, so it exits (leader.py) and, as its Deployment would,
    is started again. After it the running training is untouched, a pod failure is
    restarted exactly once, and a training created afterwards gets its pods."""
    create_training(api, namespace, training("before"))
    wait_for("its pods", lambda: len(kubelet.pods()) == 2)
    for pod in kubelet.pods():
        kubelet.run(pod.metadata.name)
    wait_phase(api, namespace, "before", "Running")
    uids = {p.metadata.uid for p in kubelet.pods()}

    apiserver = cluster.pids()["kube-apiserver"]
    os.kill(apiserver, signal.SIGSTOP)
    try:
        time.sleep(OUTAGE_SECONDS)  # the fault itself: nothing to wait on while it lasts
    finally:
        os.kill(apiserver, signal.SIGCONT)
    wait_for("the leader to give up", lambda: operator.proc.poll() is not None)
    assert "leadership lost" in operator.log_text()
    operator.start()  # the kubelet's part: the Deployment's pod restarts

    def answering():
        try:
            return {p.metadata.uid for p in kubelet.pods()}
        except Exception:  # the apiserver is still catching up
            return None

    assert wait_for("the apiserver", answering, timeout=120) == uids  # no pod touched
    assert training_status(api, namespace, "before")["phase"] == "Running"
    kubelet.exit("before-1", 137, "OOMKilled")
    # the old pods stay Terminating (no kubelet finalises them): the phase stays Restarting
    assert wait_phase(api, namespace, "before", "Restarting", timeout=90)["restarts"] == 1
    create_training(api, namespace, training("after", nodes=1))
    wait_for("the new training's pod", lambda: "after-0" in pod_names(kubelet), timeout=60)
    wait_for("the next attempt", lambda: kubelet.finalize_deleted() == 3 and
             pod_names(kubelet, **{"resnet50.dev/attempt": "1"}) == ["before-0", "before-1"])
    assert training_status(api, namespace, "before")["restarts"] == 1


def pod_names(kubelet, **labels) -> list[str]:
    return sorted(p.metadata.name for p in kubelet.pods(**labels)
                  if not p.metadata.deletion_timestamp)
