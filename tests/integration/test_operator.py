"""The operator against a real kube-apiserver: CRD validation, pods, phases, restarts,
operator restarts, garbage collection and RBAC."""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import yaml
from kube import (
    EXAMPLES,
    ROOT,
    Operator,
    create_training,
    events,
    example,
    get_training,
    table,
    wait_for,
    wait_for_events,
)
from kubernetes import client, utils
from kubernetes.client.rest import ApiException

from resnet50_operator.spec import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.cluster


def small_training(name: str = "r50", **spec: object) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResNet50Training",
        "metadata": {"name": name},
        "spec": {"nodes": 2, "gpusPerNode": 8, "dataset": {"hostPath": {"path": "/data"}},
                 "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 1}},
    }
    body["spec"].update(spec)
    return body


def phase(api, namespace, name="r50"):
    return get_training(api, namespace, name).get("status", {}).get("phase")


def pod_names(kubelet, **labels):
    return sorted(p.metadata.name for p in kubelet.pods(**labels)
                  if not p.metadata.deletion_timestamp)


def attempt_pods(kubelet, attempt):
    """Pods of one attempt, once the kubelet has finished deleting the older ones."""
    kubelet.finalize_deleted()
    return pod_names(kubelet, **{"resnet50.dev/attempt": str(attempt)})


# ------------------------------------------------------------------ the CRD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"gpusPerNode": 17}, "spec.gpusPerNode: Invalid value: 17: spec.gpusPerNode "
                     "in body should be less than or equal to 16", id="too-many-gpus"),
        pytest.param({"nodes": 0}, "spec.nodes in body should be greater than or equal to 1",
                     id="no-nodes"),
        pytest.param({"training": {"precision": "fp8"}},
                     'spec.training.precision: Unsupported value: "fp8"', id="precision"),
        pytest.param({"dataset": {"hostPath": {"path": "relative"}}},
                     "spec.dataset.hostPath.path in body should match '^/'", id="relative-path"),
    ],
)
def test_the_crd_rejects_bad_trainings_with_readable_messages(api, namespace, change,
                                                              message):
    """Types and bounds; the CEL rules are in test_crd_rules.py."""
    body = small_training(**change)
    with pytest.raises(ApiException) as exc:
        create_training(api, namespace, body)
    assert exc.value.status == 422
    assert message in json.loads(exc.value.body)["message"]


def test_a_training_without_dataset_is_rejected(api, namespace):
    body = small_training()
    del body["spec"]["dataset"]
    with pytest.raises(ApiException, match="spec.dataset: Required value"):
        create_training(api, namespace, body)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_is_accepted_and_defaulted(api, namespace, path):
    body = yaml.safe_load(path.read_text())
    created = create_training(api, namespace, body)
    spec = created["spec"]
    assert spec["restartPolicy"]["maxRestarts"] == body["spec"]["restartPolicy"]["maxRestarts"]
    assert spec["gpuResourceName"] == "nvidia.com/gpu"  # filled in by the schema's default
    assert spec["runPolicy"] == {"suspend": False, "progressDeadlineSeconds": 1800,
                                 "firstProgressDeadlineSeconds": 3600,
                                 "terminationGracePeriodSeconds": 120}


# ------------------------------------------------------------------ the operator


def make_volume_claim(api, namespace, name, mode):
    """A PVC bound to a hostPath PV, which the controller-manager's binder pairs up."""
    core = client.CoreV1Api(api)
    core.create_persistent_volume({
        "metadata": {"name": f"{namespace}-{name}"},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": [mode],
                 "hostPath": {"path": f"/mnt/{name}"}, "storageClassName": "",
                 "claimRef": {"namespace": namespace, "name": name}}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": name},
        "spec": {"accessModes": [mode], "storageClassName": "", "volumeName":
                 f"{namespace}-{name}", "resources": {"requests": {"storage": "1Ti"}}}})


def test_pods_and_service_of_the_16_card_example(api, namespace, operator, kubelet):
    make_volume_claim(api, namespace, "imagenet", "ReadOnlyMany")
    make_volume_claim(api, namespace, "resnet50-checkpoints", "ReadWriteMany")
    create_training(api, namespace, example("resnet50-16cards"))
    name = "resnet50-16cards"
    wait_for("two pods", lambda: pod_names(kubelet) == [f"{name}-0", f"{name}-1"])
    pods = kubelet.pods()
    for pod in pods:
        (container,) = pod.spec.containers
        assert container.resources.limits["nvidia.com/gpu"] == "8"
        assert pod.metadata.owner_references[0].kind == "ResNet50Training"
    # The scheduler binds them to the fake GPU nodes (8 GPUs each: one pod per node).
    bound = wait_for("both pods bound", lambda: [p.spec.node_name for p in kubelet.pods()
                                                 if p.spec.node_name])
    assert len(set(bound)) == 2
    svc = client.CoreV1Api(api).read_namespaced_service(name, namespace)
    assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses
    status = wait_for("status", lambda: get_training(api, namespace, name).get("status"))
    assert status["gpus"] == 16 and status["nodes"]["total"] == 2


def test_phases_follow_the_pods_to_success(api, namespace, operator, kubelet):
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    wait_for("Pending", lambda: phase(api, namespace) == "Pending")  # written after the pods
    kubelet.run("r50-0")
    kubelet.run("r50-1")
    wait_for("Running", lambda: phase(api, namespace) == "Running")
    status = get_training(api, namespace, "r50")["status"]
    assert status["ready"] == "2/2" and status["startTime"]
    kubelet.exit("r50-0", 0)
    kubelet.exit("r50-1", 0)
    wait_for("Succeeded", lambda: phase(api, namespace) == "Succeeded")
    status = get_training(api, namespace, "r50")["status"]
    assert status["completionTime"] and status["restarts"] == 0
    wait_for_events(api, namespace, "r50", "Created", "Running", "Succeeded")
    # Succeeded pods stay for their logs.
    assert pod_names(kubelet) == ["r50-0", "r50-1"]


def test_a_killed_rank_restarts_the_whole_group(api, namespace, operator, kubelet):
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    first_uids = {p.metadata.uid for p in kubelet.pods()}
    kubelet.run("r50-0")
    kubelet.exit("r50-1", 137, "OOMKilled", message="epoch 3: killed")
    wait_for("Restarting", lambda: phase(api, namespace) == "Restarting")
    wait_for("attempt 1 created", lambda: attempt_pods(kubelet, 1) == ["r50-0", "r50-1"])
    assert not first_uids & {p.metadata.uid for p in kubelet.pods()}
    status = get_training(api, namespace, "r50")["status"]
    assert status["restarts"] == 1 and status["attempt"] == 1
    assert status["lastFailure"]["exitCode"] == 137
    assert status["lastFailure"]["message"] == "epoch 3: killed"
    assert status["restartHistory"][0]["reason"] == "OOMKilled"
    (restarting,) = wait_for_events(api, namespace, "r50", "Restarting")
    assert restarting.type == "Warning"
    assert restarting.message == ("restart 1 of 2 in 1 s after pod r50-1 exit code 137 "
                                  "(OOMKilled): epoch 3: killed")


def test_a_configuration_error_fails_without_restart(api, namespace, operator, kubelet):
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    kubelet.run("r50-0")
    kubelet.exit("r50-1", 2, message="resnet50-train: error: data path /data does not exist")
    wait_for("Failed", lambda: phase(api, namespace) == "Failed")
    status = get_training(api, namespace, "r50")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ConfigurationError"
    assert "data path /data does not exist" in failed["message"]
    assert status["restarts"] == 0
    # The running rank is stopped, the failed one kept for its logs.
    wait_for("survivor deleted", lambda: pod_names(kubelet) == ["r50-1"])


def test_a_pod_the_apiserver_refuses_fails_the_training_saying_why(api, namespace, operator,
                                                                   kubelet):
    """A value no schema of ours checks (a toleration's operator) reaches the pod."""
    create_training(api, namespace, small_training(scheduling={
        "tolerations": [{"key": "gpu", "operator": "Sometimes"}]}))
    wait_for("Failed", lambda: phase(api, namespace) == "Failed")
    status = get_training(api, namespace, "r50")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert failed["message"].startswith("the apiserver refused pod r50-0: ")
    assert "Sometimes" in failed["message"]
    # Posted after the status is written:
    reasons = wait_for("the Event", lambda: [e.reason for e in events(api, namespace, "r50")])
    assert reasons == ["InvalidSpec"]
    assert pod_names(kubelet) == []


def test_the_restart_budget_runs_out(api, namespace, operator, kubelet):
    create_training(api, namespace, small_training(restartPolicy={"maxRestarts": 1,
                                                                  "backoffSeconds": 0}))
    for attempt in (0, 1):
        wait_for(f"attempt {attempt}", lambda a=attempt: len(attempt_pods(kubelet, a)) == 2)
        kubelet.exit("r50-0", 137, "OOMKilled")
    wait_for("Failed", lambda: phase(api, namespace) == "Failed")
    failed = next(c for c in get_training(api, namespace, "r50")["status"]["conditions"]
                  if c["type"] == "Failed")
    assert failed["reason"] == "RestartLimitExceeded"
    assert "restart budget of 1 spent" in failed["message"]


def test_an_unschedulable_job_says_why(api, namespace, operator, kubelet):
    create_training(api, namespace, small_training(gpusPerNode=16))
    status = wait_for("the scheduler's reason", lambda: next(
        (c for c in get_training(api, namespace, "r50").get("status", {}).get("conditions", [])
         if c["type"] == "Running" and c["reason"] == "Unschedulable"), None))
    assert "Insufficient nvidia.com/gpu" in status["message"]
    assert phase(api, namespace) == "Pending"


def test_a_pending_pods_warning_event_says_why_the_training_waits(api, namespace, operator,
                                                                  kubelet):
    """The kubelet's Warning Event on a pod (here posted as it would) reaches the training
    through the operator's watch of Events: no read of Events per training."""
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    pod = kubelet.pods(**{"resnet50.dev/node-index": "1"})[0]
    client.CoreV1Api(api).create_namespaced_event(namespace, {
        "metadata": {"generateName": "r50-1."}, "type": "Warning", "reason": "FailedMount",
        "message": 'MountVolume.SetUp failed for volume "data": not a directory',
        "involvedObject": {"kind": "Pod", "name": pod.metadata.name, "namespace": namespace,
                           "uid": pod.metadata.uid},
        "source": {"component": "kubelet"}})
    status = wait_for("the Event's reason", lambda: next(
        (c for c in get_training(api, namespace, "r50").get("status", {}).get("conditions", [])
         if c["type"] == "Running" and c["reason"] == "FailedMount"), None))
    assert status["message"] == ('pod r50-1: MountVolume.SetUp failed for volume "data": '
                                 "not a directory")
    wait_for_events(api, namespace, "r50", "FailedMount")


def test_operator_restart_mid_job_creates_no_duplicates(api, namespace, cluster, kubelet,
                                                        tmp_path):
    first = Operator(cluster, tmp_path / "op1.log", namespace=namespace).start()
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    kubelet.run("r50-0")
    kubelet.run("r50-1")
    wait_for("Running", lambda: phase(api, namespace) == "Running")
    uids = {p.metadata.uid for p in kubelet.pods()}
    first.kill()
    second = Operator(cluster, tmp_path / "op2.log", namespace=namespace).start()
    try:
        kubelet.exit("r50-0", 0)
        kubelet.exit("r50-1", 0)
        wait_for("Succeeded", lambda: phase(api, namespace) == "Succeeded")
        assert {p.metadata.uid for p in kubelet.pods()} == uids
        assert get_training(api, namespace, "r50")["status"]["restarts"] == 0
    finally:
        second.stop()


def test_deleting_the_training_garbage_collects_its_pods_and_service(api, namespace, operator,
                                                                     kubelet):
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                 PLURAL, "r50")
    core = client.CoreV1Api(api)

    def collected():
        kubelet.finalize_deleted()
        services = core.list_namespaced_service(namespace).items
        return not kubelet.pods() and not services

    wait_for("the garbage collector", collected, timeout=30)


def test_suspend_deletes_the_pods_and_resume_recreates_them(api, namespace, operator, kubelet):
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    objects = client.CustomObjectsApi(api)
    objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "r50",
                                           {"spec": {"runPolicy": {"suspend": True}}})
    wait_for("Suspended", lambda: phase(api, namespace) == "Suspended")
    wait_for("no pods", lambda: kubelet.finalize_deleted() == 0 and not kubelet.pods())
    objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "r50",
                                           {"spec": {"runPolicy": {"suspend": False}}})
    wait_for("pods again", lambda: len(pod_names(kubelet)) == 2)
    assert get_training(api, namespace, "r50")["status"]["restarts"] == 0


# ------------------------------------------------------------------ RBAC


def test_the_shipped_rbac_is_enough_for_the_operator(api, cluster, kubelet, namespace,
                                                     tmp_path):
    """The operator runs with the ServiceAccount token of manifests/operator and nothing more."""
    for name in ("namespace.yaml", "rbac.yaml"):
        try:
            utils.create_from_yaml(api, str(ROOT / "manifests" / "operator" / name))
        except utils.FailToCreateError as exc:  # an earlier test of this session made them
            if any(e.status != 409 for e in exc.api_exceptions):
                raise
    # A bound token from the TokenRequest API, as the kubelet projects into the pod.
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        "resnet50-operator", "resnet50-operator",
        {"spec": {"expirationSeconds": 3600}}).status.token
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    restricted = copy.deepcopy(kubeconfig)
    restricted["users"] = [{"name": "operator", "user": {"token": token}}]
    for ctx in restricted["contexts"]:
        ctx["context"]["user"] = "operator"
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(restricted))

    op = Operator(cluster, tmp_path / "rbac-operator.log", kubeconfig=path,
                  namespace=namespace).start()
    try:
        create_training(api, namespace, small_training(
            runPolicy={"ttlSecondsAfterFinished": 0}))
        wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
        kubelet.run("r50-0")
        kubelet.exit("r50-1", 137)
        wait_for("restart", lambda: len(attempt_pods(kubelet, 1)) == 2)
        kubelet.exit("r50-0", 0)
        kubelet.exit("r50-1", 0)
        # ttlSecondsAfterFinished: 0 deletes the finished training: the delete verb works too.
        wait_for("the training deleted after success", lambda: not client.CustomObjectsApi(
            api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])
        assert "Forbidden" not in op.log_text() and "forbidden" not in op.log_text()
    finally:
        op.stop()

    review = client.AuthorizationV1Api(api).create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "system:serviceaccount:resnet50-operator:resnet50-operator",
                 "resourceAttributes": {"verb": "list", "resource": "secrets"}}})
    assert review.status.allowed is False


def test_a_spec_change_while_running_is_reported(api, namespace, operator, kubelet):
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    kubelet.run("r50-0")
    kubelet.run("r50-1")
    wait_for("Running", lambda: phase(api, namespace) == "Running")
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "r50", {"spec": {"training": {"epochs": 5}}})
    warning = wait_for("a SpecChanged event", lambda: next(
        (e for e in events(api, namespace, "r50") if e.reason == "SpecChanged"), None))
    assert warning.type == "Warning"
    assert warning.message.startswith("spec.training changed while the training is Running")
    assert pod_names(kubelet) == ["r50-0", "r50-1"]  # the running group is left alone


def kubectl(cluster, *args: str) -> str:
    from devcluster.controlplane import find_binaries

    found, _ = find_binaries()
    proc = subprocess.run([str(found["kubectl"]), *args], capture_output=True, text=True,
                          env={**os.environ, **cluster.env()}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_operator_manifests_are_accepted_by_the_apiserver(cluster):
    """`kubectl apply -k manifests/operator`, as the README says, checked by the apiserver
    (its namespace first: a server-side dry run needs it to exist)."""
    manifests = ROOT / "manifests"
    out = kubectl(cluster, "apply", "-f", str(manifests / "operator" / "namespace.yaml"))
    out += kubectl(cluster, "apply", "--dry-run=server", "-k", str(manifests / "operator"))
    for line in ("customresourcedefinition.apiextensions.k8s.io/resnet50trainings.resnet50.dev",
                 "namespace/resnet50-operator", "serviceaccount/resnet50-operator",
                 "clusterrole.rbac.authorization.k8s.io/resnet50-operator",
                 "deployment.apps/resnet50-operator"):
        assert line in out


def test_kubectl_explain_shows_each_sections_own_description(cluster):
    out = kubectl(cluster, "explain", "r50t.spec.dataset")
    assert out.split()[:6] == ["GROUP:", "resnet50.dev", "KIND:", "ResNet50Training",
                               "VERSION:", "v1alpha1"]
    assert "Set exactly one of persistentVolumeClaim, hostPath and nfs, or synthetic: true" \
        in " ".join(out.split())
    for field in ("hostPath", "nfs", "persistentVolumeClaim", "subPath", "synthetic"):
        assert f"  {field}\t" in out, field
    out = kubectl(cluster, "explain", "r50t.spec.restartPolicy.maxRestarts")
    assert "FIELD: maxRestarts <integer>" in out


def test_kubectl_get_shows_the_printer_columns(api, cluster, namespace, operator, kubelet):
    create_training(api, namespace, small_training())
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    kubelet.run("r50-0")
    kubelet.run("r50-1")
    wait_for("Running", lambda: phase(api, namespace) == "Running")
    (row,) = table(kubectl(cluster, "get", "r50t", "-n", namespace))
    assert list(row) == ["NAME", "PHASE", "READY", "GPUS", "EPOCH", "TOP-1", "IMG/S", "ETA",
                         "RESTARTS", "AGE"]
    # No trainer runs in this tier, so no progress: those columns are empty.
    assert [row[k] for k in ("NAME", "PHASE", "READY", "GPUS", "RESTARTS")] == [
        "r50", "Running", "2/2", "16", "0"]
    assert {row[k] for k in ("EPOCH", "TOP-1", "IMG/S", "ETA")} <= {"", "<none>"}


def test_server_side_apply_shares_the_training_with_the_operator(api, cluster, namespace,
                                                                  operator, kubelet, tmp_path):
    """`kubectl apply --server-side` owns the spec, the operator its status and bookkeeping:
    a second apply with a change meets no conflict while the training runs."""
    body = small_training()
    manifest = tmp_path / "r50.yaml"
    manifest.write_text(yaml.safe_dump(body))
    kubectl(cluster, "apply", "--server-side", "-n", namespace, "-f", str(manifest))
    wait_for("pods", lambda: len(pod_names(kubelet)) == 2)
    kubelet.run("r50-0")
    kubelet.run("r50-1")
    wait_for("Running", lambda: phase(api, namespace) == "Running")
    body["spec"]["runPolicy"] = {"activeDeadlineSeconds": 3600}
    manifest.write_text(yaml.safe_dump(body))
    out = kubectl(cluster, "apply", "--server-side", "-n", namespace, "-f", str(manifest))
    assert "serverside-applied" in out
    training = get_training(api, namespace, "r50")
    assert training["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3600
    managers = [(m["manager"], m["operation"], m.get("subresource", ""))
                for m in training["metadata"]["managedFields"]]
    assert ("kubectl", "Apply", "") in managers  # the spec
    assert any(sub == "status" for _, _, sub in managers)  # the operator's status writes
