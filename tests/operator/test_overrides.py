"""spec.podTemplate: what it adds to the rendered pods, and what it may not override."""

import pytest

from resnet50_operator import overrides

# The InfiniBand recipe's template (docs/operator.md, Fast networks).
RDMA = {
    "metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": "ib-sriov"},
                 "labels": {"team": "vision"}},
    "spec": {
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "containers": [
            {"name": "trainer",
             "resources": {"limits": {"rdma/hca_shared_devices_a": "1"},
                           "requests": {"rdma/hca_shared_devices_a": "1"}},
             "volumeMounts": [{"name": "ib-config", "mountPath": "/etc/ib"}],
             "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}},
            {"name": "log-shipper", "image": "registry.example.com/shipper:1"},
        ],
        "initContainers": [{"name": "warm-cache", "image": "registry.example.com/warm:1"}],
        "volumes": [{"name": "ib-config", "configMap": {"name": "ib"}}],
    },
}


def rendered():
    return {
        "metadata": {"name": "r50-0", "labels": {"resnet50.dev/training": "r50"},
                     "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "trainer", "image": "trainer:1",
                "resources": {"limits": {"nvidia.com/gpu": "8"},
                              "requests": {"nvidia.com/gpu": "8"}},
                "volumeMounts": [{"name": "checkpoints", "mountPath": "/checkpoints"}],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}}}],
            "initContainers": [{"name": "prepare-checkpoints"}],
            "volumes": [{"name": "checkpoints", "emptyDir": {}}],
        },
    }


def test_a_template_adds_to_the_pod_and_merges_into_the_trainer():
    pod = overrides.apply(rendered(), RDMA)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"] == {"resnet50.dev/training": "r50", "team": "vision"}
    assert meta["annotations"]["k8s.v1.cni.cncf.io/networks"] == "ib-sriov"
    assert meta["annotations"]["prometheus.io/scrape"] == "true"
    assert (spec["hostNetwork"], spec["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    trainer, shipper = spec["containers"]
    assert (trainer["name"], trainer["image"], shipper["name"]) == ("trainer", "trainer:1",
                                                                   "log-shipper")
    assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "8",
                                              "rdma/hca_shared_devices_a": "1"}
    assert [m["name"] for m in trainer["volumeMounts"]] == ["checkpoints", "ib-config"]
    assert trainer["securityContext"] == {"allowPrivilegeEscalation": False,
                                          "capabilities": {"drop": ["ALL"], "add": ["IPC_LOCK"]}}
    assert [c["name"] for c in spec["initContainers"]] == ["prepare-checkpoints", "warm-cache"]
    assert [v["name"] for v in spec["volumes"]] == ["checkpoints", "ib-config"]
    assert spec["restartPolicy"] == "Never"
    assert overrides.problems(RDMA, "nvidia.com/gpu") == []


def test_no_template_leaves_the_pod_as_rendered():
    assert overrides.apply(rendered(), None) == rendered()


@pytest.mark.parametrize(("template", "problem"), [
    ({"spec": {"restartPolicy": "Always"}},
     "spec.podTemplate.spec.restartPolicy: set by the operator (restarts are of the whole "
     "group, from checkpoints)"),
    ({"spec": {"nodeSelector": {"gpu": "h100"}}},
     "spec.podTemplate.spec.nodeSelector: set by spec.scheduling.nodeSelector"),
    ({"spec": {"securityContext": {"runAsUser": 0}}},
     "spec.podTemplate.spec.securityContext: set by the operator (the trainer runs as uid "
     "1000, not as root)"),
    ({"spec": {"containers": [{"name": "trainer", "command": ["bash"]}]}},
     "spec.podTemplate.spec.containers[trainer].command: set by the operator (resnet50-train)"),
    ({"spec": {"containers": [{"name": "trainer", "env": [{"name": "X", "value": "1"}]}]}},
     "spec.podTemplate.spec.containers[trainer].env: set by spec.env"),
    ({"spec": {"containers": [{"name": "trainer", "resources": {"limits": {
        "nvidia.com/gpu": "4"}}}]}},
     "spec.podTemplate.spec.containers[trainer].resources.limits[nvidia.com/gpu]: set by "
     "spec.gpusPerNode"),
    ({"spec": {"containers": [{"name": "trainer", "resources": {"requests": {"cpu": "4"}}}]}},
     "spec.podTemplate.spec.containers[trainer].resources.requests[cpu]: set by "
     "spec.resources.cpu"),
    ({"spec": {"containers": [{"name": "trainer", "volumeMounts": [
        {"name": "mine", "mountPath": "/checkpoints/"}]}]}},
     "spec.podTemplate.spec.containers[trainer].volumeMounts[mine]: /checkpoints is mounted "
     "by the operator (spec.checkpoint)"),
    ({"spec": {"containers": [{"name": "trainer", "securityContext": {"privileged": True}}]}},
     "spec.podTemplate.spec.containers[trainer].securityContext: only capabilities.add may "
     "be given (e.g. IPC_LOCK for RDMA); the rest is the operator's (non-root, no privilege "
     "escalation)"),
    ({"spec": {"volumes": [{"name": "checkpoints", "emptyDir": {}}]}},
     "spec.podTemplate.spec.volumes[checkpoints]: a volume of the operator"),
    ({"spec": {"containers": [{"name": "side"}, {"name": "side"}]}},
     "spec.podTemplate.spec.containers[side]: a second container of that name"),
    ({"spec": {"initContainers": [{"name": "trainer"}]}},
     "spec.podTemplate.spec.initContainers[trainer]: the name of the trainer container"),
    ({"metadata": {"labels": {"resnet50.dev/attempt": "7"}}},
     "spec.podTemplate.metadata.labels[resnet50.dev/attempt]: set by the operator or the gang "
     "scheduler"),
    ({"metadata": {"annotations": {"kueue.x-k8s.io/pod-group-total-count": "1"}}},
     "spec.podTemplate.metadata.annotations[kueue.x-k8s.io/pod-group-total-count]: set by the "
     "operator or the gang scheduler"),
], ids=["restart-policy", "node-selector", "pod-security", "command", "env", "gpus", "cpu",
        "checkpoint-mount", "privileged", "volume-name", "duplicate-sidecar", "init-trainer",
        "operator-label", "gang-annotation"])
def test_what_the_operator_owns_is_refused_naming_who_sets_it(template, problem):
    assert [str(p) for p in overrides.problems(template, "nvidia.com/gpu")] == [problem]


def test_the_gpu_resource_name_is_the_trainings_own():
    amd = {"spec": {"containers": [{"name": "trainer", "resources": {"limits": {
        "amd.com/gpu": "8", "nvidia.com/gpu": "1"}}}]}}
    assert [str(p) for p in overrides.problems(amd, "amd.com/gpu")] == [
        "spec.podTemplate.spec.containers[trainer].resources.limits[amd.com/gpu]: set by "
        "spec.gpusPerNode"]


def test_the_apiservers_fields_are_named_as_the_template_gave_them():
    pod = overrides.apply(rendered(), RDMA)
    message = ("Pod \"r50-0\" is invalid: [spec.containers[1].image: Required value, "
               "spec.containers[0].resources.limits[rdma/x]: Invalid value, "
               "spec.volumes[1].configMap.name: Required value, spec.dnsPolicy: Unsupported "
               "value, spec.initContainers[0].name: Invalid]")
    assert overrides.in_spec_names(message, pod, RDMA) == (
        "Pod \"r50-0\" is invalid: [spec.podTemplate.spec.containers[log-shipper].image: "
        "Required value, spec.containers[0].resources.limits[rdma/x]: Invalid value, "
        "spec.podTemplate.spec.volumes[ib-config].configMap.name: Required value, "
        "spec.podTemplate.spec.dnsPolicy: Unsupported value, spec.initContainers[0].name: "
        "Invalid]")
