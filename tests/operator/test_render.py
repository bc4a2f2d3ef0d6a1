import os
import subprocess

import kubernetes_validate
import pytest
from cases import EXAMPLES, example, training

from resnet50_operator import spec
from resnet50_operator.render import (
    ATTEMPT_LABEL,
    NODE_INDEX_LABEL,
    TRAINING_LABEL,
    environment,
    parse_training,
    render_all,
    render_pod,
    render_pod_group,
    render_service,
    trainer_args,
)
from resnet50_operator.settings import OperatorSettings

K8S = kubernetes_validate.latest_version()


def env_of(pod):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in
            pod["spec"]["containers"][0]["env"]}


def container(pod):
    return pod["spec"]["containers"][0]


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
def test_every_example_renders_objects_valid_against_the_kubernetes_schemas(name, settings):
    body = example(name)
    body["metadata"].update(namespace="ml", uid="uid-1")
    objects = render_all(parse_training(body), attempt=0, settings=settings)
    assert [o["kind"] for o in objects] == ["Service"] + ["Pod"] * body["spec"]["nodes"]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_a_hostpath_checkpoint_dir_is_made_for_the_trainers_uid_by_a_chown_only_root_init(
        settings, tmp_path):
    t = training({"checkpoint": {"hostPath": {"path": "/srv/ckpt"}, "subPath": "team/run1"},
                  "resources": {"cpu": "4", "memory": "8Gi"}})
    pod = render_pod(t, 0, 0, settings)
    (init,) = pod["spec"]["initContainers"]
    assert init["image"] == container(pod)["image"]
    assert init["securityContext"]["runAsUser"] == 0
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert not init["securityContext"]["allowPrivilegeEscalation"]
    # The pod stays Guaranteed (cpu and memory requests = limits) and no GPU is held twice.
    assert init["resources"]["limits"] == init["resources"]["requests"] == {
        "cpu": "4", "memory": "8Gi"}
    assert "--output-dir" in container(pod)["args"]
    output_dir = container(pod)["args"][container(pod)["args"].index("--output-dir") + 1]
    assert init["command"][-2:] == [output_dir, "1000"] == ["/checkpoints/team/run1", "1000"]
    # The script itself, run by a real shell on a scratch tree in place of the volume.
    script = init["command"][2]
    run = subprocess.run(["sh", "-c", script, "sh", str(tmp_path / "team/run1"),
                          str(os.getuid())], capture_output=True, text=True)
    assert run.returncode == 0 and (tmp_path / "team/run1").is_dir()
    (tmp_path / "a-file").write_text("")  # where the directory cannot be made
    denied = subprocess.run(["sh", "-c", script, "sh", str(tmp_path / "a-file/run1"), "1000"],
                            capture_output=True, text=True)
    assert denied.returncode == 4 and "make the node's directory writable" in denied.stderr


@pytest.mark.parametrize("checkpoint", [None, {"persistentVolumeClaim": {"claimName": "c"}}])
def test_no_root_init_container_without_a_hostpath_checkpoint(settings, checkpoint):
    t = training({"checkpoint": checkpoint} if checkpoint else {})
    assert "initContainers" not in render_pod(t, 0, 0, settings)["spec"]


def test_headless_service_publishes_not_ready_addresses(settings):
    svc = render_service(training(), settings)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert svc["spec"]["selector"] == {TRAINING_LABEL: "r50"}
    assert svc["spec"]["ports"][0]["port"] == 29500


def test_pods_are_owned_labelled_and_have_stable_dns(settings):
    pod = render_pod(training(), 1, 3, settings)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "r50-1" and meta["namespace"] == "ml"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ResNet50Training", "r50", "uid-1", True)
    assert meta["labels"][TRAINING_LABEL] == "r50"
    assert (meta["labels"][NODE_INDEX_LABEL], meta["labels"][ATTEMPT_LABEL]) == ("1", "3")
    assert meta["labels"]["app.kubernetes.io/instance"] == "r50"
    assert (spec["hostname"], spec["subdomain"]) == ("r50-1", "r50")
    assert spec["restartPolicy"] == "Never"


def test_rendezvous_environment_is_pytorchjob_style(settings):
    env = env_of(render_pod(training(), 1, 0, settings))
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "r50-0.r50.ml.svc"
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29500"
    assert (env["WORLD_SIZE"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("16", "2", "8")
    assert env["PET_NODE_RANK"] == env["RANK"] == "1"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_master_address_is_the_same_in_every_attempt(settings):
    addresses = {env_of(render_pod(training(), 1, a, settings))["MASTER_ADDR"] for a in range(3)}
    assert addresses == {"r50-0.r50.ml.svc"}


def test_user_env_wins_over_the_nccl_defaults(settings):
    t = training(env=[{"name": "NCCL_DEBUG", "value": "INFO"},
                      {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    env = env_of(render_pod(t, 0, 0, settings))
    assert env["NCCL_DEBUG"] == "INFO" and "secretKeyRef" in env["TOKEN"]


@pytest.mark.parametrize(
    ("spec", "limits"),
    [
        pytest.param({}, {"nvidia.com/gpu": "8"}, id="gpus-only"),
        pytest.param({"gpuResourceName": "iluvatar.ai/gpu", "gpusPerNode": 4},
                     {"iluvatar.ai/gpu": "4"}, id="other-vendor"),
        pytest.param({"resources": {"cpu": "32", "memory": "256Gi"}},
                     {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}, id="cpu-memory"),
        pytest.param({"gpusPerNode": 0, "processesPerNode": 2}, None, id="cpu-job"),
    ],
)
def test_resources_request_what_they_limit(spec, limits, settings):
    resources = container(render_pod(training(spec), 0, 0, settings))["resources"]
    if limits is None:
        assert resources == {}
    else:
        assert resources == {"limits": limits, "requests": limits}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, ["--data-path", "/data", "--output-dir", "/checkpoints/r50"],
                     id="defaults"),
        pytest.param({"dataset": {"synthetic": True}, "gpusPerNode": 0},
                     ["--synthetic", "--output-dir", "/checkpoints/r50", "--device", "cpu"],
                     id="synthetic-cpu"),
        pytest.param({"dataset": {"hostPath": {"path": "/mnt/ds"}, "subPath": "imagenet/"},
                      "checkpoint": {"hostPath": {"path": "/ck"}, "subPath": "runs/a"}},
                     ["--data-path", "/data/imagenet", "--output-dir", "/checkpoints/runs/a"],
                     id="sub-paths"),
        pytest.param({"checkpoint": {"persistentVolumeClaim": {"claimName": "c"},
                                     "intervalMinutes": 30}},
                     ["--data-path", "/data", "--output-dir", "/checkpoints/r50",
                      "--checkpoint-interval-minutes", "30"], id="checkpoint-interval"),
        pytest.param({"training": {"preset": "amp-8cards", "epochs": 5, "channelsLast": False,
                                   "extraArgs": ["--label-smoothing", "0.1"]}},
                     ["--preset", "amp-8cards", "--data-path", "/data", "--output-dir",
                      "/checkpoints/r50", "--epochs", "5", "--no-channels-last",
                      "--label-smoothing", "0.1"], id="training-options"),
    ],
)
def test_trainer_arguments(spec, expected, settings):
    args = trainer_args(training(spec), settings)
    assert args[:4] == ["--metrics-port", str(settings.metrics_port), "--termination-log",
                        "/dev/termination-log"]
    assert args[4:] == expected


@pytest.mark.parametrize(("run_policy", "grace"), [({}, 120),
                                                   ({"terminationGracePeriodSeconds": 600}, 600)])
def test_the_grace_period_leaves_the_trainer_time_to_write_a_checkpoint(run_policy, grace,
                                                                         settings):
    pod = render_pod(training({"runPolicy": run_policy}), 0, 0, settings)
    assert pod["spec"]["terminationGracePeriodSeconds"] == grace


@pytest.mark.parametrize("spec", [{"runPolicy": {"terminationGracePeriodSeconds": 0}},
                                  {"runPolicy": {"terminationGracePeriodSeconds": 3601}},
                                  {"checkpoint": {"persistentVolumeClaim": {"claimName": "c"},
                                                  "intervalMinutes": 0}}])
def test_the_grace_period_and_checkpoint_interval_are_bounded(spec):
    with pytest.raises(ValueError, match="terminationGracePeriodSeconds|intervalMinutes"):
        training(spec)


def test_progress_is_published_on_a_port_prometheus_finds_on_the_first_pod(settings):
    pod = render_pod(training(), 0, 0, settings)
    ports = {p["name"]: p["containerPort"] for p in container(pod)["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true",
                                              "prometheus.io/port": str(settings.metrics_port)}
    # Only the first pod runs global rank 0, the one that serves it.
    assert "annotations" not in render_pod(training(), 1, 0, settings)["metadata"]


def test_launch_topology_reaches_the_trainer_through_the_environment(settings):
    """The container runs resnet50-train, whose launcher reads PET_* (and keeps exit codes)."""
    c = container(render_pod(training(), 0, 0, settings))
    assert c["command"] == ["resnet50-train"]
    assert not any(a.startswith(("--nnodes", "--node-rank", "--master")) for a in c["args"])


@pytest.mark.parametrize(
    ("spec", "data_volume"),
    [
        pytest.param({}, {"persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}},
                     id="pvc"),
        pytest.param({"dataset": {"hostPath": {"path": "/mnt/imagenet"}}},
                     {"hostPath": {"path": "/mnt/imagenet", "type": "Directory"}}, id="hostPath"),
        pytest.param({"dataset": {"nfs": {"server": "nas", "path": "/export/imagenet"}}},
                     {"nfs": {"server": "nas", "path": "/export/imagenet", "readOnly": True}},
                     id="nfs"),
    ],
)
def test_dataset_is_mounted_read_only(spec, data_volume, settings):
    pod = render_pod(training(spec), 0, 0, settings)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert {k: v for k, v in volumes["data"].items() if k != "name"} == data_volume
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"


def test_checkpoints_survive_restarts_only_on_a_volume(settings):
    with_volume = render_pod(training({"checkpoint": {"persistentVolumeClaim":
                                                      {"claimName": "ck"}}}), 0, 0, settings)
    volumes = {v["name"]: v for v in with_volume["spec"]["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"]["claimName"] == "ck"
    without = {v["name"]: v for v in render_pod(training(), 0, 0, settings)["spec"]["volumes"]}
    assert without["checkpoints"] == {"name": "checkpoints", "emptyDir": {}}


def test_scheduling_fields_pass_through(settings):
    t = training({"scheduling": {
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}}, "priorityClassName": "high",
        "schedulerName": "volcano"},
        "serviceAccountName": "trainer", "imagePullSecrets": [{"name": "regcred"}]})
    spec = render_pod(t, 0, 0, settings)["spec"]
    assert spec["nodeSelector"] == {"gpu": "h100"}
    assert spec["tolerations"][0]["operator"] == "Exists"
    assert (spec["priorityClassName"], spec["schedulerName"]) == ("high", "volcano")
    assert spec["serviceAccountName"] == "trainer"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


CPU = {"gpusPerNode": 0, "dataset": {"synthetic": True}}
H100 = "NVIDIA-H100-80GB-HBM3"


def placed(placement, **spec):
    return training({"scheduling": {"placement": placement}, **spec})


def required(pod, kind):
    """The required terms of one kind of the pod's affinity (podAffinity, podAntiAffinity)."""
    affinity = pod["spec"].get("affinity", {})
    return affinity.get(kind, {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])


def own_pods(topology_key):
    return {"labelSelector": {"matchLabels": {TRAINING_LABEL: "r50"}},
            "topologyKey": topology_key}


@pytest.mark.parametrize(
    ("spec", "one_per_node"),
    [
        pytest.param({}, True, id="gpu-default-on"),
        pytest.param(CPU, False, id="cpu-default-off"),
        pytest.param({"scheduling": {"placement": {"onePodPerNode": False}}}, False,
                     id="gpu-turned-off"),
        pytest.param({**CPU, "scheduling": {"placement": {"onePodPerNode": True}}}, True,
                     id="cpu-turned-on"),
    ],
)
def test_one_pod_per_node_is_a_required_anti_affinity_among_the_trainings_pods(
        spec, one_per_node, settings):
    """CPU trainings share nodes by default: the demos and tests put 2 pods on one node."""
    pod = render_pod(training(spec), 1, 0, settings)
    expected = [own_pods("kubernetes.io/hostname")] if one_per_node else []
    assert required(pod, "podAntiAffinity") == expected
    assert required(pod, "podAffinity") == []
    if not one_per_node:
        assert "affinity" not in pod["spec"]


def test_a_topology_key_keeps_every_pod_in_the_first_pods_domain(settings):
    pod = render_pod(placed({"topologyKey": "network.topology.nvidia.com/block"}), 0, 0,
                     settings)
    (term,) = required(pod, "podAffinity")
    assert term == own_pods("network.topology.nvidia.com/block")
    # The first pod has no peer to follow: the scheduler admits it because it matches its
    # own term (namespace and labels), on any node with the label.
    assert term["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert "namespaces" not in term and "namespaceSelector" not in term  # its own namespace


def test_a_gpu_product_selects_the_nodes_by_their_gpu_feature_discovery_label(settings):
    pod = render_pod(placed({"gpuProduct": H100}), 0, 0, settings)
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": H100}


def test_placement_is_merged_with_the_users_own_affinity_and_node_selector(settings):
    user_anti = {"labelSelector": {"matchLabels": {"team": "b"}},
                 "topologyKey": "kubernetes.io/hostname"}
    user_affinity = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "pool", "operator": "In", "values": ["training"]}]}]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [user_anti]},
        "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": own_pods("topology.kubernetes.io/zone")}]},
    }
    t = training({"scheduling": {
        "nodeSelector": {"pool": "training", "nvidia.com/gpu.product": H100},
        "affinity": user_affinity,
        "placement": {"topologyKey": "network.topology.nvidia.com/block", "gpuProduct": H100}}})
    pod = render_pod(t, 0, 0, settings)
    affinity = pod["spec"]["affinity"]
    assert affinity["nodeAffinity"] == user_affinity["nodeAffinity"]
    assert required(pod, "podAntiAffinity") == [user_anti, own_pods("kubernetes.io/hostname")]
    assert required(pod, "podAffinity") == [own_pods("network.topology.nvidia.com/block")]
    assert affinity["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == \
        user_affinity["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pod["spec"]["nodeSelector"] == {"pool": "training", "nvidia.com/gpu.product": H100}
    # The spec is not changed by rendering: the next pod gets the terms once.
    assert required(render_pod(t, 1, 0, settings), "podAntiAffinity") == \
        required(pod, "podAntiAffinity")
    assert t.spec.scheduling.affinity == user_affinity


@pytest.mark.parametrize("malformed", [{"podAntiAffinity": "apart"},
                                       {"podAntiAffinity": {
                                           "requiredDuringSchedulingIgnoredDuringExecution": {}}}])
def test_a_malformed_affinity_is_left_for_the_kubernetes_client_to_refuse(malformed, settings):
    pod = render_pod(training({"scheduling": {"affinity": malformed}}), 0, 0, settings)
    assert pod["spec"]["affinity"] == malformed


@pytest.mark.parametrize("placement", [
    {"topologyKey": "network.topology.nvidia.com/block", "gpuProduct": H100},
    {"onePodPerNode": False, "topologyKey": "topology.kubernetes.io/zone"},
])
def test_placed_pods_are_valid_against_the_kubernetes_schemas(placement, settings):
    t = training({"scheduling": {"placement": placement, "affinity": {"podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": []}}}})
    for obj in render_all(t, attempt=0, settings=settings):
        kubernetes_validate.validate(obj, K8S, strict=True)


def gang(mode, **more):
    return training({"scheduling": {"gang": {"mode": mode, **more}}})


def test_kueue_mode_makes_each_attempt_one_plain_pod_group_in_the_queue(settings):
    t = gang("kueue", queue="team-a")
    pods = [render_pod(t, i, 3, settings) for i in (0, 1)]
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
        assert labels["kueue.x-k8s.io/pod-group-name"] == "r50-attempt-3"
        assert pod["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "2"
        assert "schedulerName" not in pod["spec"]  # Kueue gates; the default scheduler places
    assert render_pod_group(t) is None  # Kueue makes the Workload itself


def test_volcano_mode_makes_one_podgroup_for_all_gpus_and_uses_its_scheduler(settings):
    t = training({"nodes": 2, "gpusPerNode": 8, "scheduling": {
        "gang": {"mode": "volcano", "queue": "research"}, "priorityClassName": "high"}})
    pod = render_pod(t, 1, 0, settings)
    assert pod["spec"]["schedulerName"] == "volcano"
    assert pod["metadata"]["annotations"] == {"scheduling.k8s.io/group-name": "r50"}
    group = render_pod_group(t)
    assert (group["apiVersion"], group["kind"]) == ("scheduling.volcano.sh/v1beta1", "PodGroup")
    assert group["metadata"]["name"] == "r50" and group["metadata"]["namespace"] == "ml"
    assert group["metadata"]["ownerReferences"][0]["kind"] == "ResNet50Training"
    assert group["spec"] == {"minMember": 2, "minResources": {"nvidia.com/gpu": "16"},
                             "queue": "research", "priorityClassName": "high"}


def test_coscheduling_mode_labels_the_pods_into_a_podgroup_with_a_timeout(settings):
    t = training({"scheduling": {"gang": {"mode": "coscheduling", "scheduleTimeoutSeconds": 120},
                                 "schedulerName": "scheduler-plugins-scheduler"}})
    pod = render_pod(t, 0, 0, settings)
    assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "r50"
    assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
    group = render_pod_group(t)
    assert group["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
    assert group["spec"] == {"minMember": 2, "minResources": {"nvidia.com/gpu": "16"},
                             "scheduleTimeoutSeconds": 120}


def test_without_gang_mode_nothing_is_added(settings):
    pod = render_pod(training(), 1, 0, settings)
    assert not any(k.startswith(("kueue.", "scheduling.")) for k in pod["metadata"]["labels"])
    assert "annotations" not in pod["metadata"] and render_pod_group(training()) is None


def test_a_pod_template_is_merged_and_its_pods_validate(settings):
    t = training({"podTemplate": {
        "metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": "ib-sriov"}},
        "spec": {"runtimeClassName": "nvidia", "containers": [
            {"name": "trainer", "resources": {"limits": {"rdma/hca": "1"}}},
            {"name": "log-shipper", "image": "registry.example.com/shipper:1"}]}}})
    pod = render_pod(t, 0, 0, settings)
    assert pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == "ib-sriov"
    assert pod["spec"]["runtimeClassName"] == "nvidia"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["trainer", "log-shipper"]
    assert container(pod)["resources"]["limits"] == {"nvidia.com/gpu": "8", "rdma/hca": "1"}
    kubernetes_validate.validate(pod, K8S, strict=True)


def test_on_the_host_network_each_training_gets_its_own_ports_and_cluster_dns(settings):
    host = {"podTemplate": {"spec": {"hostNetwork": True}}}
    a, b = (parse_training({"metadata": {"name": "r50", "namespace": "ml", "uid": uid},
                            "spec": {**training().spec.model_dump(by_alias=True,
                                                                  exclude_none=True), **host}})
            for uid in ("uid-a", "uid-b"))
    pods = [render_pod(t, 0, attempt, settings) for t in (a, b) for attempt in (0, 1)]
    ports = [{p["name"]: p["containerPort"] for p in container(pod)["ports"]} for pod in pods]
    assert ports[0] == ports[1] and ports[0] != ports[2]  # stable per training
    assert ports[0]["metrics"] == ports[0]["rendezvous"] + 1
    assert 20000 <= ports[0]["rendezvous"] < 30000
    assert env_of(pods[0])["MASTER_PORT"] == str(ports[0]["rendezvous"])
    args = container(pods[0])["args"]
    assert args[args.index("--metrics-port") + 1] == str(ports[0]["metrics"])
    assert pods[0]["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert render_service(a, settings)["spec"]["ports"][0]["port"] == ports[0]["rendezvous"]
    plain = render_pod(training(), 0, 0, settings)
    assert {p["containerPort"] for p in container(plain)["ports"]} == {
        settings.rendezvous_port, settings.metrics_port}
    assert "dnsPolicy" not in plain["spec"]


def test_a_pod_template_that_overrides_the_operator_is_refused_naming_the_fields():
    with pytest.raises(ValueError) as refused:
        training({"podTemplate": {"spec": {"restartPolicy": "Always", "containers": [
            {"name": "trainer", "command": ["bash"]}]}}})
    assert str(refused.value) == (
        "spec.podTemplate.spec.restartPolicy: set by the operator (restarts are of the whole "
        "group, from checkpoints); spec.podTemplate.spec.containers[trainer].command: set by "
        "the operator (resnet50-train)")


def test_security_context_is_restricted_but_lets_training_run(settings):
    pod = render_pod(training(), 0, 0, settings)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["automountServiceAccountToken"] is False
    sc = container(pod)["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_image_defaults_to_the_operator_setting(settings):
    assert container(render_pod(training(), 0, 0, settings))["image"] == settings.trainer_image
    assert container(render_pod(training(image="me/t:1"), 0, 0, settings))["image"] == "me/t:1"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"gpusPerNode": 17}, "spec.gpusPerNode: Input should be less than or equal to 16 "
                              "(got 17)"),
        ({"nodes": 0}, "spec.nodes: Input should be greater than or equal to 1 (got 0)"),
        ({"training": {"precision": "fp8"}}, "spec.training.precision: Input should be 'fp32'"),
        ({"env": [{"value": "1"}]}, "spec.env.0.name: Field required"),
        ({"resources": {"memory": "lots"}}, "spec.resources.memory: must be a positive quantity"),
    ],
)
def test_invalid_specs_name_the_field(spec, message):
    """Types and bounds; the rules shared with the CRD are in tests/bad_specs.py."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        training(spec)


def test_the_operator_owns_exactly_the_rendezvous_variables_it_reserves():
    env = environment(training(), 0, OperatorSettings())
    plain = {v["name"] for v in env if "value" in v}
    assert set(spec.OPERATOR_ENV) <= plain
    assert not {n for n in plain - set(spec.OPERATOR_ENV)
                if n.startswith(("PET_", "MASTER_")) or n in ("RANK", "WORLD_SIZE")}


def test_names_too_long_for_pod_hostnames_are_refused():
    with pytest.raises(ValueError, match="metadata.name: at most 56 characters .*; it has 57"):
        training(name="x" * 57)
